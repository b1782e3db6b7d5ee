//! Password hashing (argon2id) on a few dedicated threads, each hashing into one memory block of
//! its own that it keeps: however many logins arrive at once, identity holds at most one
//! argon2 block (19 MiB with the default parameters) per thread, and the rest queue.
//!
//! Why not tokio's blocking pool: each hash there allocated and freed 19 MiB on whichever
//! blocking thread ran it, and the allocator kept the freed memory per thread arena, so 200
//! concurrent logins left identity at half a gigabyte resident.

use std::sync::{Arc, LazyLock, Mutex};

use argon2::{
    Algorithm, Argon2, Block, Params, Version,
    password_hash::{Output, ParamsString, PasswordHash, SaltString, rand_core::OsRng},
};
use tokio::sync::{mpsc, oneshot};

use crate::domain::Password;

/// Memory one hash holds while it runs (argon2's default `m_cost`, 19 MiB).
pub const MEMORY_PER_HASH: usize = Params::DEFAULT_M_COST as usize * 1024;

/// Hashes waiting for a thread at most; callers beyond it wait to queue (backpressure).
const QUEUE: usize = 256;

enum Job {
    Hash(String, oneshot::Sender<Option<String>>),
    Verify { password: String, hash: String, reply: oneshot::Sender<bool> },
}

/// A hashing thread's own memory, reused for every hash it computes.
struct Worker {
    blocks: Vec<Block>,
}

impl Worker {
    fn new() -> Self {
        Self { blocks: Vec::new() }
    }

    /// The first `count` blocks, grown once when a stored hash needs more than any before.
    fn memory(&mut self, count: usize) -> &mut [Block] {
        if self.blocks.len() < count {
            self.blocks.resize(count, Block::default());
        }
        &mut self.blocks[..count]
    }

    /// argon2id with the default parameters and a fresh salt, as a PHC string.
    fn hash(&mut self, password: &str) -> Option<String> {
        let argon = Argon2::default();
        let salt = SaltString::generate(&mut OsRng);
        let mut salt_buf = [0u8; 64];
        let salt_bytes = salt.as_salt().decode_b64(&mut salt_buf).ok()?;
        let memory = self.memory(argon.params().block_count());
        let output = Output::init_with(Params::DEFAULT_OUTPUT_LEN, |out| {
            argon.hash_password_into_with_memory(password.as_bytes(), salt_bytes, out, &mut *memory).map_err(Into::into)
        })
        .ok()?;
        let phc = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(argon.params()).ok()?,
            salt: Some(salt.as_salt()),
            hash: Some(output),
        };
        Some(phc.to_string())
    }

    /// Whether `password` matches the PHC string `hash` (its own algorithm and parameters).
    fn verify(&mut self, password: &str, hash: &str) -> bool {
        let mut check = || -> Option<bool> {
            let parsed = PasswordHash::new(hash).ok()?;
            let expected = parsed.hash?;
            let argon = Argon2::new(
                Algorithm::try_from(parsed.algorithm).ok()?,
                parsed.version.map_or(Some(Version::default()), |v| Version::try_from(v).ok())?,
                Params::try_from(&parsed).ok()?,
            );
            let mut salt_buf = [0u8; 64];
            let salt_bytes = parsed.salt?.decode_b64(&mut salt_buf).ok()?;
            let memory = self.memory(argon.params().block_count());
            let computed = Output::init_with(expected.len(), |out| {
                argon.hash_password_into_with_memory(password.as_bytes(), salt_bytes, out, &mut *memory).map_err(Into::into)
            })
            .ok()?;
            // `Output`'s equality is constant-time.
            Some(computed == expected)
        };
        check().unwrap_or(false)
    }
}

/// Verifying against this for an unknown email costs the same time as a wrong password.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| Worker::new().hash("dummy password for timing").unwrap_or_default());

/// Hashes and verifies passwords on `threads` dedicated threads.
#[derive(Clone)]
pub struct Hasher {
    jobs: mpsc::Sender<Job>,
}

impl Hasher {
    pub fn new(threads: usize) -> Self {
        LazyLock::force(&DUMMY_HASH);
        let (jobs, rx) = mpsc::channel::<Job>(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new().name(format!("password-hash-{i}")).spawn(move || {
                let mut worker = Worker::new();
                loop {
                    // One thread waits on the queue at a time; the others are hashing or wait here.
                    let job = rx.lock().unwrap_or_else(std::sync::PoisonError::into_inner).blocking_recv();
                    match job {
                        Some(Job::Hash(password, reply)) => {
                            let _ = reply.send(worker.hash(&password));
                        }
                        Some(Job::Verify { password, hash, reply }) => {
                            let _ = reply.send(worker.verify(&password, &hash));
                        }
                        None => return, // every Hasher is gone
                    }
                }
            });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "could not start a password hashing thread");
            }
        }
        Self { jobs }
    }

    /// One thread per CPU: more would not finish sooner, only hold more memory.
    pub fn per_cpu() -> Self {
        Self::new(std::thread::available_parallelism().map_or(2, usize::from))
    }

    /// The PHC string for `password`.
    pub async fn hash(&self, password: &Password) -> anyhow::Result<String> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::Hash(password.expose().to_owned(), reply))
            .await
            .map_err(|_| anyhow::anyhow!("password hashing threads are gone"))?;
        answer.await?.ok_or_else(|| anyhow::anyhow!("argon2 refused to hash"))
    }

    /// Whether `password` matches `hash`; with no hash (unknown email), checks against a dummy one
    /// so the answer takes as long, and is `false`.
    pub async fn verify(&self, password: String, hash: Option<String>) -> bool {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| DUMMY_HASH.clone());
        let (reply, answer) = oneshot::channel();
        if self.jobs.send(Job::Verify { password, hash, reply }).await.is_err() {
            return false;
        }
        answer.await.unwrap_or(false) && known
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use argon2::PasswordVerifier;

    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_unknown_users_never_match() {
        let h = Hasher::new(1);
        let pw = Password::parse("correct horse battery").unwrap();
        let hash = h.hash(&pw).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        assert!(h.verify("correct horse battery".into(), Some(hash.clone())).await);
        assert!(!h.verify("wrong horse battery".into(), Some(hash.clone())).await);
        assert!(!h.verify("dummy password for timing".into(), None).await, "the dummy hash never lets anyone in");
        // The strings are standard PHC: argon2's own verifier agrees, both ways.
        assert!(Argon2::default().verify_password(b"correct horse battery", &PasswordHash::new(&hash).unwrap()).is_ok());
        use argon2::PasswordHasher;
        let theirs = Argon2::default().hash_password(b"made elsewhere", &SaltString::generate(&mut OsRng)).unwrap().to_string();
        assert!(h.verify("made elsewhere".into(), Some(theirs)).await);
        assert!(!h.verify("x".into(), Some("not a phc string".into())).await);
    }
}
