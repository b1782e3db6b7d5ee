//! Stripe API objects in Stripe's real shape: each starts from Stripe's example fixture and only
//! the fields that identify it and tell its state are set. Used by billing's local checkout
//! (the embedded stand-in for Stripe) and by tests.

use serde_json::{Map, Value, json};

fn template(raw: &str) -> Map<String, Value> {
    match serde_json::from_str(raw) {
        Ok(Value::Object(map)) => map,
        // The fixtures are compiled in and checked by a unit test below.
        _ => Map::new(),
    }
}

fn build(raw: &str, fields: Value) -> Value {
    let mut obj = template(raw);
    if let Value::Object(set) = fields {
        obj.extend(set);
    }
    Value::Object(obj)
}

/// Sets (or adds) fields on an object, e.g. `with(sub, json!({"cancel_at_period_end": true}))`.
pub fn with(mut object: Value, fields: Value) -> Value {
    if let (Value::Object(obj), Value::Object(set)) = (&mut object, fields) {
        obj.extend(set);
    }
    object
}

/// A webhook `event` wrapping `object` (`data.object`), as Stripe posts it.
pub fn event(id: &str, event_type: &str, created: i64, object: Value) -> Value {
    let livemode = object.get("livemode").cloned().unwrap_or(Value::Bool(false));
    build(
        include_str!("../fixtures/event.json"),
        json!({
            "id": id, "type": event_type, "created": created, "livemode": livemode,
            "api_version": "2025-10-29.clover", "pending_webhooks": 1,
            "request": {"id": null, "idempotency_key": null},
            "data": {"object": object},
        }),
    )
}

/// The parts of a checkout session that billing reads.
#[derive(Debug, Clone, Default)]
pub struct CheckoutSpec<'a> {
    pub id: &'a str,
    pub account_id: &'a str,
    pub customer: &'a str,
    pub subscription: &'a str,
    pub created: i64,
    pub amount_total: i64,
    pub email: &'a str,
}

/// A completed, paid subscription-mode `checkout.session`.
pub fn checkout_session(s: &CheckoutSpec<'_>) -> Value {
    build(
        include_str!("../fixtures/checkout_session.json"),
        json!({
            "id": s.id, "created": s.created, "expires_at": s.created + 86_400,
            "mode": "subscription", "status": "complete", "payment_status": "paid",
            "client_reference_id": s.account_id, "metadata": {"account_id": s.account_id},
            "customer": s.customer, "customer_email": s.email, "subscription": s.subscription,
            "payment_intent": null, "currency": "usd", "amount_subtotal": s.amount_total, "amount_total": s.amount_total,
            "url": null,
        }),
    )
}

/// The parts of a subscription that billing reads.
#[derive(Debug, Clone, Default)]
pub struct SubscriptionSpec<'a> {
    pub id: &'a str,
    pub customer: &'a str,
    pub account_id: &'a str,
    pub price: &'a str,
    /// Stripe's status: `incomplete`, `trialing`, `active`, `past_due`, `unpaid`, `canceled`, ...
    pub status: &'a str,
    pub created: i64,
    pub period_end: i64,
}

/// A `subscription` with one item on `price`.
pub fn subscription(s: &SubscriptionSpec<'_>) -> Value {
    let mut obj = build(include_str!("../fixtures/subscription.json"), Value::Null);
    let item = obj.pointer("/items/data/0").cloned().unwrap_or_else(|| json!({}));
    let price = item.get("price").cloned().unwrap_or_else(|| json!({}));
    let item = with(
        item,
        json!({
            "id": format!("si_{}", s.id.trim_start_matches("sub_")), "subscription": s.id, "created": s.created,
            "current_period_start": s.created, "current_period_end": s.period_end,
            "price": with(price, json!({"id": s.price, "created": s.created})),
        }),
    );
    let canceled = s.status == "canceled";
    let at = |yes: bool| if yes { json!(s.created) } else { Value::Null };
    obj = with(
        obj,
        json!({
            "id": s.id, "customer": s.customer, "status": s.status, "created": s.created, "start_date": s.created,
            "billing_cycle_anchor": s.created, "metadata": {"account_id": s.account_id},
            "cancel_at_period_end": false, "cancel_at": null, "canceled_at": at(canceled), "ended_at": at(canceled),
            "items": {"object": "list", "data": [item], "has_more": false, "url": format!("/v1/subscription_items?subscription={}", s.id)},
            "latest_invoice": null,
        }),
    );
    obj
}

/// The parts of an invoice that billing reads.
#[derive(Debug, Clone, Default)]
pub struct InvoiceSpec<'a> {
    pub id: &'a str,
    pub customer: &'a str,
    pub subscription: &'a str,
    /// The subscription's `metadata.account_id`, which Stripe copies into the invoice's
    /// `parent.subscription_details.metadata` (empty: none).
    pub account_id: &'a str,
    /// `paid` or `open` (a failed attempt leaves it open).
    pub status: &'a str,
    pub created: i64,
    pub amount: i64,
    pub attempt_count: i64,
    /// The subscription's price, billed on the invoice's one line (empty: the fixture's line).
    pub price: &'a str,
}

/// A subscription `invoice` (linked the current way, through `parent.subscription_details`).
pub fn invoice(s: &InvoiceSpec<'_>) -> Value {
    let paid = s.status == "paid";
    let metadata = if s.account_id.is_empty() { json!({}) } else { json!({"account_id": s.account_id}) };
    let mut obj = build(
        include_str!("../fixtures/invoice.json"),
        json!({
            "id": s.id, "customer": s.customer, "status": s.status, "created": s.created,
            "billing_reason": "subscription_cycle", "currency": "usd",
            "amount_due": s.amount, "amount_paid": if paid { s.amount } else { 0 }, "amount_remaining": if paid { 0 } else { s.amount },
            "total": s.amount, "subtotal": s.amount, "attempt_count": s.attempt_count, "attempted": s.attempt_count > 0,
            "period_start": s.created, "period_end": s.created,
            "next_payment_attempt": if paid { Value::Null } else { json!(s.created + 3 * 86_400) },
            "parent": {"type": "subscription_details", "quote_details": null,
                       "subscription_details": {"subscription": s.subscription, "metadata": metadata}},
            "status_transitions": {"finalized_at": s.created, "marked_uncollectible_at": null,
                                   "paid_at": if paid { json!(s.created) } else { Value::Null }, "voided_at": null},
        }),
    );
    if s.price.is_empty() {
        return obj;
    }
    // One subscription line billing the price, as Stripe's `line_item` carries it today
    // (`pricing.price_details.price`, linked through `parent.subscription_item_details`).
    let mut line = obj["lines"]["data"][0].take();
    line = with(
        line,
        json!({
            "id": format!("il_{}", s.id.trim_start_matches("in_")), "invoice": s.id, "amount": s.amount, "subtotal": s.amount,
            "description": "1 × Switchboard (at the plan's price / month)", "quantity": 1,
            "period": {"start": s.created, "end": s.created + 30 * 86_400},
            "parent": {"type": "subscription_item_details", "invoice_item_details": null,
                       "subscription_item_details": {"invoice_item": null, "proration": false, "proration_details": {"credited_items": null},
                                                     "subscription": s.subscription, "subscription_item": format!("si_{}", s.subscription.trim_start_matches("sub_"))}},
            "pricing": {"type": "price_details", "price_details": {"price": s.price, "product": "prod_switchboard"},
                        "unit_amount_decimal": s.amount.to_string()},
        }),
    );
    with(obj, json!({"lines": {"object": "list", "data": [line], "has_more": false, "url": format!("/v1/invoices/{}/lines", s.id)}}))
}

/// A card `charge` of `amount`, of which `amount_refunded` was refunded.
pub fn charge(id: &str, customer: &str, amount: i64, amount_refunded: i64, created: i64) -> Value {
    build(
        include_str!("../fixtures/charge.json"),
        json!({
            "id": id, "customer": customer, "created": created, "currency": "usd", "status": "succeeded",
            "amount": amount, "amount_captured": amount, "captured": true, "paid": true,
            "amount_refunded": amount_refunded, "refunded": amount_refunded >= amount,
        }),
    )
}

/// A paid `invoice_payment`: the payment intent that paid `invoice` (how invoices name their
/// payments since Stripe's 2025-03 API; an invoice no longer carries `charge`).
pub fn invoice_payment(id: &str, invoice: &str, payment_intent: &str, amount: i64, created: i64) -> Value {
    build(
        include_str!("../fixtures/invoice_payment.json"),
        json!({
            "id": id, "invoice": invoice, "created": created, "currency": "usd", "livemode": false,
            "amount_requested": amount, "amount_paid": amount, "status": "paid",
            "payment": {"type": "payment_intent", "payment_intent": payment_intent},
            "status_transitions": {"canceled_at": null, "paid_at": created},
        }),
    )
}

/// A `refund` of `amount` of `charge` (made through `payment_intent`, if any).
pub fn refund(id: &str, charge: &str, payment_intent: Option<&str>, amount: i64, status: &str, created: i64) -> Value {
    build(
        include_str!("../fixtures/refund.json"),
        json!({
            "id": id, "charge": charge, "payment_intent": payment_intent, "amount": amount, "currency": "usd",
            "status": status, "created": created, "reason": "requested_by_customer",
        }),
    )
}

/// A `customer` carrying the Switchboard account id in its metadata.
pub fn customer(id: &str, email: &str, account_id: &str, created: i64) -> Value {
    build(
        include_str!("../fixtures/customer.json"),
        json!({"id": id, "email": email, "created": created, "metadata": {"account_id": account_id}}),
    )
}

/// A customer portal `billing_portal.session`.
pub fn portal_session(id: &str, customer: &str, url: &str, return_url: &str, created: i64) -> Value {
    build(
        include_str!("../fixtures/billing_portal_session.json"),
        json!({"id": id, "customer": customer, "url": url, "return_url": return_url, "created": created, "livemode": false}),
    )
}

/// A Stripe list object (`GET /v1/subscriptions` and friends).
pub fn list(url: &str, data: Vec<Value>, has_more: bool) -> Value {
    json!({"object": "list", "url": url, "has_more": has_more, "data": data})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixtures_parse_and_builders_keep_stripes_shape() {
        for raw in [
            include_str!("../fixtures/event.json"),
            include_str!("../fixtures/checkout_session.json"),
            include_str!("../fixtures/subscription.json"),
            include_str!("../fixtures/invoice.json"),
            include_str!("../fixtures/charge.json"),
            include_str!("../fixtures/customer.json"),
            include_str!("../fixtures/billing_portal_session.json"),
            include_str!("../fixtures/invoice_payment.json"),
            include_str!("../fixtures/refund.json"),
        ] {
            assert!(!template(raw).is_empty());
        }
        let sub =
            subscription(&SubscriptionSpec { id: "sub_1", customer: "cus_1", status: "active", price: "price_1", ..Default::default() });
        assert_eq!(sub["object"], "subscription");
        assert_eq!(sub["items"]["data"][0]["price"]["id"], "price_1");
        assert!(sub.get("automatic_tax").is_some(), "the rest of Stripe's fields stay");
        let ev = event("evt_1", "customer.subscription.updated", 5, sub);
        assert_eq!(ev["object"], "event");
        assert_eq!(ev["data"]["object"]["id"], "sub_1");
        let inv = invoice(&InvoiceSpec { id: "in_1", subscription: "sub_1", status: "paid", amount: 900, ..Default::default() });
        assert_eq!(inv["parent"]["subscription_details"]["subscription"], "sub_1");
        let priced = invoice(&InvoiceSpec { id: "in_2", subscription: "sub_1", status: "paid", price: "price_1", ..Default::default() });
        assert_eq!(priced["lines"]["data"][0]["pricing"]["price_details"]["price"], "price_1");
        assert_eq!(priced["lines"]["data"][0]["parent"]["subscription_item_details"]["subscription"], "sub_1");
        assert_eq!(charge("ch_1", "cus_1", 900, 900, 1)["refunded"], true);
        assert_eq!(invoice_payment("inpay_1", "in_1", "pi_1", 900, 1)["payment"]["payment_intent"], "pi_1");
        assert_eq!(refund("re_1", "ch_1", Some("pi_1"), 900, "succeeded", 1)["object"], "refund");
    }
}
