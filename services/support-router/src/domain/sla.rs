//! SLA clocks: targets per tier, business hours, and how each of a ticket's three clocks runs.
//!
//! Time is measured as **business time** (`SUPPORT_ROUTER_BUSINESS_HOURS`, `24/7` by default, or
//! e.g. `mon-fri 09:00-17:00` in UTC), in milliseconds.
//!
//! - **First response** runs from opening until the first agent answer.
//! - **Next response** runs while the customer wrote last after an agent answer: each customer
//!   reply after an answer starts a new spell; the next agent answer stops it.
//! - **Resolution** runs from opening until resolved, and **pauses while waiting on the
//!   customer** (after an agent answer, until the customer replies). Reopening resumes it where it
//!   stopped.
//!
//! Resolving stops every clock. A clock past its target is **missed**: the sweeper records the
//! breach of a running clock once per spell (`breached_at`), and a clock stopped late that the
//! sweeper had not caught yet is recorded at the stop, so each spell's breach is published once.
//! Targets follow the ticket's tier and priority (urgent tickets have their own targets, whatever
//! the tier), and change with them; a spell already breached stays breached.

use chrono::{DateTime, Datelike, Duration, NaiveTime, Utc};
use sb_types::{SlaClock, TicketPriority};

use super::Tier;

/// Business time: for each weekday (Monday first), the windows open that day, as minutes from
/// midnight UTC, sorted and not overlapping. `None`: always open (24/7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusinessHours {
    week: Option<[Vec<(u32, u32)>; 7]>,
}

const DAY_MS: i64 = 86_400_000;
const WEEK_MS: i64 = 7 * DAY_MS;
const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// `HH:MM`, 00:00 to 24:00, in minutes from midnight.
fn hhmm(s: &str) -> Result<u32, String> {
    let bad = || format!("{s:?} is not a time between 00:00 and 24:00 (HH:MM)");
    let (h, m) = s.split_once(':').filter(|(h, m)| h.len() == 2 && m.len() == 2).ok_or_else(bad)?;
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if m >= 60 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

fn day(s: &str) -> Result<usize, String> {
    DAYS.iter().position(|d| *d == s).ok_or_else(|| format!("{s:?} is not a day (mon, tue, wed, thu, fri, sat, sun)"))
}

impl BusinessHours {
    pub fn always() -> Self {
        Self { week: None }
    }

    /// `24/7`, or comma-separated `<days> HH:MM-HH:MM` windows in UTC, days being one day or a
    /// range (`mon-fri 09:00-17:00, sat 10:00-14:00`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        if s == "24/7" {
            return Ok(Self::always());
        }
        let mut week: [Vec<(u32, u32)>; 7] = Default::default();
        for window in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            let (days, times) = window.split_once(' ').ok_or_else(|| format!("{window:?} is not like `mon-fri 09:00-17:00`"))?;
            let (first, last) = match days.split_once('-') {
                Some((a, b)) => (day(a)?, day(b)?),
                None => (day(days)?, day(days)?),
            };
            if last < first {
                return Err(format!("{days:?}: the days run from Monday to Sunday"));
            }
            let (start, end) = times.trim().split_once('-').ok_or_else(|| format!("{times:?} is not like 09:00-17:00"))?;
            let (start, end) = (hhmm(start.trim())?, hhmm(end.trim())?);
            if end <= start {
                return Err(format!("{times:?}: a window ends after it starts (no overnight windows; split them)"));
            }
            for d in &mut week[first..=last] {
                d.push((start, end));
            }
        }
        for d in &mut week {
            d.sort_unstable();
            let mut merged: Vec<(u32, u32)> = Vec::new();
            for (s, e) in d.drain(..) {
                match merged.last_mut() {
                    Some(last) if s <= last.1 => last.1 = last.1.max(e),
                    _ => merged.push((s, e)),
                }
            }
            *d = merged;
        }
        if week.iter().all(Vec::is_empty) {
            return Err("names no business hours".into());
        }
        if week.iter().all(|d| d.as_slice() == [(0, 1440)]) {
            return Ok(Self::always());
        }
        Ok(Self { week: Some(week) })
    }

    /// Business milliseconds in one week.
    fn week_ms(week: &[Vec<(u32, u32)>; 7]) -> i64 {
        week.iter().flatten().map(|(s, e)| i64::from(e - s) * 60_000).sum()
    }

    /// The open windows of the day starting at `midnight`, as instants.
    fn windows(week: &[Vec<(u32, u32)>; 7], midnight: DateTime<Utc>) -> impl Iterator<Item = (DateTime<Utc>, DateTime<Utc>)> + '_ {
        let weekday = midnight.weekday().num_days_from_monday() as usize;
        week[weekday].iter().map(move |(s, e)| (midnight + Duration::minutes(i64::from(*s)), midnight + Duration::minutes(i64::from(*e))))
    }

    fn midnight(t: DateTime<Utc>) -> DateTime<Utc> {
        t.date_naive().and_time(NaiveTime::MIN).and_utc()
    }

    /// Business milliseconds in `[from, to)` (0 when `to` is not after `from`).
    pub fn between_ms(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
        if to <= from {
            return 0;
        }
        let Some(week) = &self.week else { return (to - from).num_milliseconds() };
        // Any seven days hold one week's business time.
        let weeks = (to - from).num_days() / 7;
        let mut total = weeks * Self::week_ms(week);
        let from = from + Duration::days(7 * weeks);
        let mut day = Self::midnight(from);
        while day < to {
            for (ws, we) in Self::windows(week, day) {
                let (s, e) = (ws.max(from), we.min(to));
                if e > s {
                    total += (e - s).num_milliseconds();
                }
            }
            day += Duration::days(1);
        }
        total
    }

    /// The instant at which `ms` business milliseconds have passed since `from` (`from` itself
    /// for none).
    pub fn add_ms(&self, from: DateTime<Utc>, ms: i64) -> DateTime<Utc> {
        if ms <= 0 {
            return from;
        }
        let Some(week) = &self.week else { return from + Duration::milliseconds(ms) };
        let week_ms = Self::week_ms(week);
        let weeks = (ms - 1) / week_ms;
        let mut left = ms - weeks * week_ms;
        let from = from + Duration::days(7 * weeks);
        let mut day = Self::midnight(from);
        // Within eight days `left` (at most a week's worth) is used up.
        for _ in 0..9 {
            for (ws, we) in Self::windows(week, day) {
                let s = ws.max(from);
                if we <= s {
                    continue;
                }
                let open = (we - s).num_milliseconds();
                if left <= open {
                    return s + Duration::milliseconds(left);
                }
                left -= open;
            }
            day += Duration::days(1);
        }
        from + Duration::milliseconds(left + WEEK_MS)
    }
}

/// The three targets of one tier (or of urgent tickets), in milliseconds of business time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlaTargets {
    pub first_response_ms: i64,
    pub next_response_ms: i64,
    pub resolution_ms: i64,
}

impl SlaTargets {
    fn hours(first: i64, next: i64, resolution: i64) -> Self {
        let h = 3_600_000;
        Self { first_response_ms: first * h, next_response_ms: next * h, resolution_ms: resolution * h }
    }

    pub fn of(&self, clock: SlaClock) -> i64 {
        match clock {
            SlaClock::FirstResponse => self.first_response_ms,
            SlaClock::NextResponse => self.next_response_ms,
            SlaClock::Resolution => self.resolution_ms,
        }
    }
}

/// SLA targets per tier, and for urgent tickets whatever their tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlaPolicy {
    pub free: SlaTargets,
    /// Unknown tier: free's unless set.
    pub unknown: Option<SlaTargets>,
    pub standard: SlaTargets,
    pub priority: SlaTargets,
    pub urgent: SlaTargets,
}

pub const DEFAULT_SLA: &str = "free:48h/48h/7d;standard:24h/24h/5d;priority:4h/8h/2d;urgent:1h/2h/1d";

impl Default for SlaPolicy {
    fn default() -> Self {
        Self {
            free: SlaTargets::hours(48, 48, 7 * 24),
            unknown: None,
            standard: SlaTargets::hours(24, 24, 5 * 24),
            priority: SlaTargets::hours(4, 8, 2 * 24),
            urgent: SlaTargets::hours(1, 2, 24),
        }
    }
}

impl SlaPolicy {
    /// `<tier|urgent>:<first>/<next>/<resolution>;...` over the defaults (e.g. `priority:2h/4h/1d`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut out = Self::default();
        for entry in s.split(';').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, targets) = entry.split_once(':').ok_or_else(|| format!("{entry:?} is not tier:first/next/resolution"))?;
            let parts: Vec<&str> = targets.split('/').map(str::trim).collect();
            let [first, next, resolution] = parts.as_slice() else {
                return Err(format!("{entry:?}: give three durations, first response/next response/resolution"));
            };
            let ms = |d: &str| {
                sb_bus::config::parse_duration(d)
                    .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                    .map_err(|e| format!("{entry:?}: {e}"))
            };
            let t = SlaTargets { first_response_ms: ms(first)?, next_response_ms: ms(next)?, resolution_ms: ms(resolution)? };
            match name.trim() {
                "free" => out.free = t,
                "unknown" => out.unknown = Some(t),
                "standard" => out.standard = t,
                "priority" => out.priority = t,
                "urgent" => out.urgent = t,
                other => return Err(format!("{other:?} is not free, unknown, standard, priority or urgent")),
            }
        }
        Ok(out)
    }

    pub fn targets(&self, tier: Tier, priority: TicketPriority) -> SlaTargets {
        if priority == TicketPriority::Urgent {
            return self.urgent;
        }
        match tier {
            Tier::Free => self.free,
            Tier::Unknown => self.unknown.unwrap_or(self.free),
            Tier::Standard => self.standard,
            Tier::Priority => self.priority,
        }
    }
}

sb_types::word_enum!(
    /// Where a clock is in its run (stored).
    Phase, "phase" {
        Idle = "idle",
        Running = "running",
        Paused = "paused",
        Stopped = "stopped",
    }
);

/// What a clock shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockState {
    Idle,
    Running,
    /// Waiting on the customer.
    Paused,
    /// Stopped in time.
    Hit,
    /// Past its target (running, or stopped late).
    Missed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockView {
    pub state: ClockState,
    /// Running: when it is due; paused: when it would be if it ran on from now; stopped: when it
    /// was due, if it was running when it stopped.
    pub due_at: Option<DateTime<Utc>>,
    pub stopped_at: Option<DateTime<Utc>>,
    pub target_ms: i64,
}

/// One clock's stored state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clock {
    pub phase: Phase,
    pub target_ms: i64,
    /// Business time used before `running_since`.
    pub elapsed_ms: i64,
    pub running_since: Option<DateTime<Utc>>,
    /// While running: when it is due.
    pub due_at: Option<DateTime<Utc>>,
    pub stopped_at: Option<DateTime<Utc>>,
    /// Which spell (start) this is: a breach is recorded once per spell.
    pub spell: i32,
    /// When this spell's breach was recorded (and `SlaBreached` published).
    pub breached_at: Option<DateTime<Utc>>,
}

impl Default for Clock {
    fn default() -> Self {
        Self::idle(0)
    }
}

/// A breach to record and publish: which clock, and when it was due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Breach {
    pub clock: SlaClock,
    pub due_at: DateTime<Utc>,
}

impl Clock {
    pub fn idle(target_ms: i64) -> Self {
        Self {
            phase: Phase::Idle,
            target_ms,
            elapsed_ms: 0,
            running_since: None,
            due_at: None,
            stopped_at: None,
            spell: 0,
            breached_at: None,
        }
    }

    /// Starts a new spell from zero.
    pub fn start(&mut self, h: &BusinessHours, now: DateTime<Utc>, target_ms: i64) {
        *self = Self {
            phase: Phase::Running,
            target_ms,
            elapsed_ms: 0,
            running_since: Some(now),
            due_at: Some(h.add_ms(now, target_ms)),
            stopped_at: None,
            spell: self.spell + 1,
            breached_at: None,
        };
    }

    fn used_ms(&self, h: &BusinessHours, now: DateTime<Utc>) -> i64 {
        self.elapsed_ms + self.running_since.map_or(0, |since| h.between_ms(since, now))
    }

    pub fn pause(&mut self, h: &BusinessHours, now: DateTime<Utc>) {
        if self.phase == Phase::Running {
            self.elapsed_ms = self.used_ms(h, now);
            self.phase = Phase::Paused;
            self.running_since = None;
            self.due_at = None;
        }
    }

    /// Runs on from where it paused or stopped (same spell).
    pub fn resume(&mut self, h: &BusinessHours, now: DateTime<Utc>) {
        if matches!(self.phase, Phase::Paused | Phase::Stopped) {
            self.phase = Phase::Running;
            self.running_since = Some(now);
            self.stopped_at = None;
            self.due_at = Some(h.add_ms(now, self.target_ms - self.elapsed_ms));
        }
    }

    /// Stops a running or paused clock; a breach to record if it stopped late and the sweeper
    /// had not recorded it yet.
    pub fn stop(&mut self, h: &BusinessHours, now: DateTime<Utc>, which: SlaClock) -> Option<Breach> {
        if !matches!(self.phase, Phase::Running | Phase::Paused) {
            return None;
        }
        self.elapsed_ms = self.used_ms(h, now);
        self.phase = Phase::Stopped;
        self.running_since = None;
        self.stopped_at = Some(now);
        if self.elapsed_ms > self.target_ms && self.breached_at.is_none() {
            self.breached_at = Some(now);
            let due_at = self.due_at.unwrap_or(now);
            return Some(Breach { clock: which, due_at });
        }
        None
    }

    /// A new target (the ticket's tier or priority changed).
    pub fn retarget(&mut self, h: &BusinessHours, target_ms: i64) {
        self.target_ms = target_ms;
        if let (Phase::Running, Some(since)) = (self.phase, self.running_since) {
            self.due_at = Some(h.add_ms(since, target_ms - self.elapsed_ms));
        }
    }

    /// Running past due with no breach recorded this spell: what the sweeper records.
    pub fn overdue(&self, now: DateTime<Utc>) -> bool {
        self.phase == Phase::Running && self.breached_at.is_none() && self.due_at.is_some_and(|due| due <= now)
    }

    pub fn view(&self, h: &BusinessHours, now: DateTime<Utc>) -> ClockView {
        let breached = self.breached_at.is_some();
        let (state, due_at) = match self.phase {
            Phase::Idle => (ClockState::Idle, None),
            Phase::Running => {
                let late = breached || self.due_at.is_some_and(|d| d <= now);
                (if late { ClockState::Missed } else { ClockState::Running }, self.due_at)
            }
            Phase::Paused => {
                let late = breached || self.elapsed_ms >= self.target_ms;
                (if late { ClockState::Missed } else { ClockState::Paused }, Some(h.add_ms(now, self.target_ms - self.elapsed_ms)))
            }
            Phase::Stopped => {
                let late = breached || self.elapsed_ms > self.target_ms;
                (if late { ClockState::Missed } else { ClockState::Hit }, self.due_at)
            }
        };
        ClockView { state, due_at, stopped_at: self.stopped_at, target_ms: self.target_ms }
    }
}

/// A ticket's three clocks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Clocks {
    pub first_response: Clock,
    pub next_response: Clock,
    pub resolution: Clock,
}

impl Clocks {
    pub fn get(&self, which: SlaClock) -> &Clock {
        match which {
            SlaClock::FirstResponse => &self.first_response,
            SlaClock::NextResponse => &self.next_response,
            SlaClock::Resolution => &self.resolution,
        }
    }

    pub fn get_mut(&mut self, which: SlaClock) -> &mut Clock {
        match which {
            SlaClock::FirstResponse => &mut self.first_response,
            SlaClock::NextResponse => &mut self.next_response,
            SlaClock::Resolution => &mut self.resolution,
        }
    }

    /// A new ticket: first response and resolution run; next response waits for an answer.
    pub fn open(h: &BusinessHours, now: DateTime<Utc>, t: SlaTargets) -> Self {
        let mut c = Self { first_response: Clock::idle(0), next_response: Clock::idle(t.next_response_ms), resolution: Clock::idle(0) };
        c.first_response.start(h, now, t.first_response_ms);
        c.resolution.start(h, now, t.resolution_ms);
        c
    }

    /// An agent answered: the response clocks stop, resolution waits on the customer.
    pub fn agent_answered(&mut self, h: &BusinessHours, now: DateTime<Utc>) -> Vec<Breach> {
        let breaches =
            [SlaClock::FirstResponse, SlaClock::NextResponse].into_iter().filter_map(|c| self.get_mut(c).stop(h, now, c)).collect();
        self.resolution.pause(h, now);
        breaches
    }

    /// The customer wrote (the ticket was not resolved): resolution runs again; after an agent's
    /// answer, a new next-response spell starts (unless one is running already).
    pub fn customer_replied(&mut self, h: &BusinessHours, now: DateTime<Utc>, answered_before: bool, t: SlaTargets) {
        if self.resolution.phase == Phase::Paused {
            self.resolution.resume(h, now);
        }
        if answered_before && self.next_response.phase != Phase::Running {
            self.next_response.start(h, now, t.next_response_ms);
        }
    }

    /// A resolved ticket reopened (by staff, or by the customer's reply): resolution runs on
    /// where it stopped, and the ticket waits for an answer again (next response after an
    /// earlier answer, else a new first-response spell).
    pub fn reopened(&mut self, h: &BusinessHours, now: DateTime<Utc>, answered_before: bool, t: SlaTargets) {
        self.resolution.resume(h, now);
        if answered_before {
            self.next_response.start(h, now, t.next_response_ms);
        } else {
            self.first_response.start(h, now, t.first_response_ms);
        }
    }

    /// Resolved (or closed): every clock stops.
    pub fn resolved(&mut self, h: &BusinessHours, now: DateTime<Utc>) -> Vec<Breach> {
        SlaClock::ALL.iter().filter_map(|c| self.get_mut(*c).stop(h, now, *c)).collect()
    }

    pub fn retarget(&mut self, h: &BusinessHours, t: SlaTargets) {
        for c in SlaClock::ALL {
            self.get_mut(*c).retarget(h, t.of(*c));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use chrono::TimeZone;

    use super::*;

    fn at(d: u32, h: u32, m: u32) -> DateTime<Utc> {
        // 2026-06-01 is a Monday.
        Utc.with_ymd_and_hms(2026, 6, d, h, m, 0).unwrap()
    }

    const H: i64 = 3_600_000;

    #[test]
    fn business_hours_parse() {
        assert_eq!(BusinessHours::parse("24/7").unwrap(), BusinessHours::always());
        assert_eq!(BusinessHours::parse("mon-sun 00:00-24:00").unwrap(), BusinessHours::always());
        let h = BusinessHours::parse("Mon-Fri 09:00-17:00, sat 10:00-12:00, sat 11:00-14:00").unwrap();
        let week = h.week.as_ref().unwrap();
        assert_eq!(week[0], [(540, 1020)]);
        assert_eq!(week[5], [(600, 840)], "overlapping windows merge");
        assert!(week[6].is_empty());
        for bad in [
            "",
            "mon-fri",
            "mon-fri 17:00-09:00",
            "fri-mon 09:00-17:00",
            "mon 9-17",
            "mon 9:00-17:00",
            "mon 09:00-25:00",
            "xyz 09:00-10:00",
        ] {
            assert!(BusinessHours::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn business_time_is_counted_only_in_open_hours() {
        let h = BusinessHours::parse("mon-fri 09:00-17:00").unwrap();
        // Monday 16:00 + 2 business hours = Tuesday 10:00.
        assert_eq!(h.add_ms(at(1, 16, 0), 2 * H), at(2, 10, 0));
        // Friday 16:00 + 2h = Monday 10:00.
        assert_eq!(h.add_ms(at(5, 16, 0), 2 * H), at(8, 10, 0));
        // From Saturday: starts Monday 09:00.
        assert_eq!(h.add_ms(at(6, 12, 0), H), at(8, 10, 0));
        // Exactly at the end of a window.
        assert_eq!(h.add_ms(at(1, 9, 0), 8 * H), at(1, 17, 0));
        // Several weeks: 100 business hours from Monday 09:00 = 12.5 working days.
        assert_eq!(h.add_ms(at(1, 9, 0), 100 * H), at(17, 13, 0));
        assert_eq!(h.between_ms(at(1, 9, 0), at(17, 13, 0)), 100 * H);
        assert_eq!(h.between_ms(at(5, 16, 0), at(8, 10, 0)), 2 * H);
        assert_eq!(h.between_ms(at(6, 0, 0), at(7, 23, 0)), 0, "weekend");
        assert_eq!(h.between_ms(at(2, 0, 0), at(1, 0, 0)), 0);
        let always = BusinessHours::always();
        assert_eq!(always.add_ms(at(6, 12, 0), H), at(6, 13, 0));
        assert_eq!(always.between_ms(at(1, 0, 0), at(2, 0, 0)), 24 * H);
        // add and between agree everywhere.
        for start in [at(1, 8, 59), at(3, 12, 30), at(5, 16, 59), at(7, 23, 0)] {
            for ms in [1, 30 * 60_000, 8 * H, 41 * H + 7] {
                assert_eq!(h.between_ms(start, h.add_ms(start, ms)), ms, "{start} + {ms}");
            }
        }
    }

    #[test]
    fn sla_policy_parses_over_defaults_and_urgent_wins() {
        let p = SlaPolicy::parse("priority:2h/4h/1d;unknown:1s/2s/3s").unwrap();
        assert_eq!(p.targets(Tier::Priority, TicketPriority::High).first_response_ms, 2 * H);
        assert_eq!(p.targets(Tier::Unknown, TicketPriority::Low).resolution_ms, 3_000);
        assert_eq!(p.targets(Tier::Free, TicketPriority::Low).resolution_ms, 7 * 24 * H);
        assert_eq!(p.targets(Tier::Free, TicketPriority::Urgent).first_response_ms, H);
        assert_eq!(SlaPolicy::default().targets(Tier::Unknown, TicketPriority::Low), SlaPolicy::default().free);
        assert_eq!(SlaPolicy::parse(DEFAULT_SLA).unwrap(), SlaPolicy::default());
        assert!(
            SlaPolicy::parse("gold:1h/1h/1h").is_err()
                && SlaPolicy::parse("free:1h/1h").is_err()
                && SlaPolicy::parse("free:1h/x/1h").is_err()
        );
    }

    #[test]
    fn resolution_pauses_while_waiting_on_the_customer() {
        let h = BusinessHours::always();
        let t = SlaTargets { first_response_ms: H, next_response_ms: 2 * H, resolution_ms: 10 * H };
        let mut c = Clocks::open(&h, at(1, 9, 0), t);
        assert_eq!(c.first_response.view(&h, at(1, 9, 30)).state, ClockState::Running);
        assert_eq!(c.next_response.view(&h, at(1, 9, 30)).state, ClockState::Idle);
        // An answer after 30 min: first response hit, resolution paused with 9.5h left.
        assert!(c.agent_answered(&h, at(1, 9, 30)).is_empty());
        assert_eq!(c.first_response.view(&h, at(1, 10, 0)).state, ClockState::Hit);
        let paused = c.resolution.view(&h, at(3, 0, 0));
        assert_eq!((paused.state, paused.due_at), (ClockState::Paused, Some(at(3, 9, 30))), "it would be due 9.5h from now");
        // Two days later the customer replies: nothing was used meanwhile.
        c.customer_replied(&h, at(3, 0, 0), true, t);
        assert_eq!(c.resolution.view(&h, at(3, 0, 0)).due_at, Some(at(3, 9, 30)));
        assert_eq!(c.next_response.view(&h, at(3, 0, 0)).due_at, Some(at(3, 2, 0)));
        assert!(!c.resolution.overdue(at(3, 9, 29)) && c.resolution.overdue(at(3, 9, 30)));
        // Next answer late: next response missed (a breach to publish), resolution pauses again.
        let breaches = c.agent_answered(&h, at(3, 3, 0));
        assert_eq!(breaches, [Breach { clock: SlaClock::NextResponse, due_at: at(3, 2, 0) }]);
        assert_eq!(c.next_response.view(&h, at(3, 4, 0)).state, ClockState::Missed);
        assert_eq!(c.resolution.elapsed_ms, 30 * 60_000 + 3 * H);
        // Resolved: everything stops; resolution hit.
        assert!(c.resolved(&h, at(3, 4, 0)).is_empty());
        assert_eq!(c.resolution.view(&h, at(9, 0, 0)).state, ClockState::Hit);
    }

    #[test]
    fn a_breach_is_recorded_once_per_spell() {
        let h = BusinessHours::always();
        let t = SlaTargets { first_response_ms: H, next_response_ms: H, resolution_ms: 100 * H };
        let mut c = Clocks::open(&h, at(1, 9, 0), t);
        assert!(c.first_response.overdue(at(1, 10, 0)));
        assert_eq!(c.first_response.view(&h, at(1, 10, 0)).state, ClockState::Missed, "running past due shows missed");
        // The sweeper records it...
        c.first_response.breached_at = Some(at(1, 10, 0));
        assert!(!c.first_response.overdue(at(1, 11, 0)));
        // ...so stopping late does not record it again.
        assert!(c.agent_answered(&h, at(1, 11, 0)).is_empty());
        assert_eq!(c.first_response.view(&h, at(1, 11, 0)).state, ClockState::Missed);
        // A new spell of next response can breach again.
        c.customer_replied(&h, at(1, 12, 0), true, t);
        assert!(c.next_response.overdue(at(1, 13, 0)));
        c.next_response.breached_at = Some(at(1, 13, 0));
        c.agent_answered(&h, at(1, 13, 30));
        c.customer_replied(&h, at(1, 14, 0), true, t);
        assert_eq!((c.next_response.spell, c.next_response.breached_at), (2, None));
        assert!(c.next_response.overdue(at(1, 15, 0)));
    }

    #[test]
    fn reopening_resumes_resolution_and_waits_for_an_answer_again() {
        let h = BusinessHours::always();
        let t = SlaTargets { first_response_ms: H, next_response_ms: H, resolution_ms: 4 * H };
        let mut c = Clocks::open(&h, at(1, 9, 0), t);
        c.resolved(&h, at(1, 10, 0));
        assert_eq!(c.first_response.view(&h, at(1, 10, 0)).state, ClockState::Hit);
        c.reopened(&h, at(2, 9, 0), false, t);
        assert_eq!(c.first_response.spell, 2);
        assert_eq!(c.resolution.view(&h, at(2, 9, 0)).due_at, Some(at(2, 12, 0)), "three hours were left");
        // Retargeting (e.g. the ticket became urgent) moves the due time of running clocks.
        c.retarget(&h, SlaTargets { first_response_ms: H / 2, next_response_ms: H, resolution_ms: 2 * H });
        assert_eq!(c.resolution.due_at, Some(at(2, 10, 0)));
        assert_eq!(c.first_response.due_at, Some(at(2, 9, 30)));
    }
}
