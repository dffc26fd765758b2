//! Monetary accounts, payments, request-inquiries (sandbox top-ups among them),
//! draft-payments, and bunq's list pagination.

use std::time::SystemTime;

use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{Call, Caller, parse_body};
use crate::server::Shared;
use crate::wire::{self, ApiError};
use crate::world::{
    AccountKind, DraftPayment, Payment, RequestInquiry, World, format_cents, parse_amount,
};

/// The address that gives sandbox users money.
const SUGAR_DADDY: &str = "sugardaddy@bunq.com";
/// bunq's sandbox gives at most this much per request (cents).
const SUGAR_DADDY_MAX_CENTS: i64 = 50_000;
const DEFAULT_COUNT: usize = 10;
const MAX_COUNT: usize = 200;

#[derive(Deserialize)]
struct Amount {
    value: String,
    currency: String,
}

#[derive(Deserialize)]
struct Alias {
    #[serde(rename = "type")]
    kind: String,
    value: String,
    name: Option<String>,
}

fn cents_of(amount: &Amount) -> Result<i64, ApiError> {
    if amount.currency != "EUR" {
        return Err(ApiError::bad_request(format!(
            "Currency {} is not supported for this monetary account.",
            amount.currency
        )));
    }
    parse_amount(&amount.value).ok_or_else(|| {
        ApiError::bad_request(format!(
            "The amount {:?} is not a valid positive amount.",
            amount.value
        ))
    })
}

fn check_alias(alias: &Alias) -> Result<(), ApiError> {
    match alias.kind.as_str() {
        "IBAN" | "EMAIL" | "PHONE_NUMBER" if !alias.value.is_empty() => Ok(()),
        _ => Err(ApiError::bad_request(
            "The counterparty alias must have a type IBAN, EMAIL or PHONE_NUMBER and a value.",
        )),
    }
}

fn own_account(world: &World, caller: Caller, account_id: u64) -> Result<(), ApiError> {
    match world.accounts.get(&account_id) {
        Some(a) if a.user_id == caller.owner => Ok(()),
        _ => Err(ApiError::not_found("MonetaryAccount not found.")),
    }
}

/// The caller's accounts: every kind (`monetary-account`), or one (`only`: e.g.
/// `monetary-account-bank`).
pub(crate) fn list_accounts(
    shared: &Shared,
    caller: Caller,
    only: Option<AccountKind>,
    call: &Call<'_>,
) -> Result<Response, ApiError> {
    let items = {
        let world = shared.world();
        let ids = world
            .users
            .get(&caller.owner)
            .map(|u| u.accounts.clone())
            .unwrap_or_default();
        ids.iter()
            .filter_map(|id| world.accounts.get(id))
            .filter(|a| only.is_none_or(|kind| a.kind == kind))
            .map(|a| (a.id, world.account_json(a)))
            .collect()
    };
    paginated(shared, items, call)
}

/// One of the caller's accounts, of kind `only` if given (bunq's typed endpoints do not
/// show other kinds).
pub(crate) fn get_account(
    shared: &Shared,
    caller: Caller,
    only: Option<AccountKind>,
    account_id: u64,
) -> Result<Response, ApiError> {
    let item = {
        let world = shared.world();
        own_account(&world, caller, account_id)?;
        world
            .accounts
            .get(&account_id)
            .filter(|a| only.is_none_or(|kind| a.kind == kind))
            .map(|a| world.account_json(a))
            .ok_or_else(|| ApiError::not_found("MonetaryAccount not found."))?
    };
    Ok(wire::ok(shared, vec![item]))
}

pub(crate) fn create_payment(
    shared: &Shared,
    caller: Caller,
    account_id: u64,
    call: &Call<'_>,
) -> Result<Response, ApiError> {
    #[derive(Deserialize)]
    struct Body {
        amount: Amount,
        counterparty_alias: Alias,
        description: Option<String>,
    }
    let body: Body = parse_body(call.body)?;
    let cents = cents_of(&body.amount)?;
    check_alias(&body.counterparty_alias)?;
    let mut world = shared.world();
    own_account(&world, caller, account_id)?;
    let balance = world
        .accounts
        .get(&account_id)
        .map(|a| a.balance_cents)
        .unwrap_or(0);
    if balance < cents {
        return Err(ApiError::bad_request(format!(
            "Insufficient balance: the account has {} EUR, the payment needs {} EUR.",
            format_cents(balance),
            format_cents(cents)
        )));
    }
    let id = world.next_id();
    if let Some(a) = world.accounts.get_mut(&account_id) {
        a.balance_cents -= cents;
    }
    let mut received = None;
    if body.counterparty_alias.kind == "IBAN" {
        let iban = body.counterparty_alias.value.replace(' ', "");
        if let Some(target) = world.accounts.values_mut().find(|a| a.iban == iban) {
            target.balance_cents += cents;
            received = Some((target.user_id, target.id));
        }
    }
    let payment = Payment {
        id,
        account_id,
        amount_cents: cents,
        counterparty: pointer_json(&body.counterparty_alias),
        description: body.description.unwrap_or_default(),
        created: SystemTime::now(),
    };
    let sent = json!(world.payment_json(&payment));
    let mut events = money_events(caller.owner, account_id, sent, "CREATED");
    // The other side of a payment between fake accounts: its own id and sign, as bunq
    // books it on the receiving account.
    if let Some((owner, target)) = received {
        let incoming = Payment {
            id: world.next_id(),
            account_id: target,
            amount_cents: -cents,
            counterparty: json!({
                "type": "IBAN",
                "value": world.accounts.get(&account_id).map(|a| a.iban.clone()),
            }),
            description: payment.description.clone(),
            created: payment.created,
        };
        let object = world.payment_json(&incoming);
        events.extend(money_events(owner, target, object, "RECEIVED"));
        world.received.push(incoming);
    }
    world.payments.push(payment);
    drop(world);
    crate::notify::emit(shared, &events);
    Ok(wire::created_id(shared, id))
}

pub(crate) fn list_payments(
    shared: &Shared,
    caller: Caller,
    account_id: u64,
    call: &Call<'_>,
) -> Result<Response, ApiError> {
    let items = {
        let world = shared.world();
        own_account(&world, caller, account_id)?;
        // Made and received alike, as bunq lists an account's payments.
        world
            .payments
            .iter()
            .chain(&world.received)
            .filter(|p| p.account_id == account_id)
            .map(|p| (p.id, world.payment_json(p)))
            .collect()
    };
    paginated(shared, items, call)
}

/// `GET .../monetary-account/{aid}/payment/{pid}`: one payment booked on the account
/// (made, received, or a top-up), as the list shows it.
pub(crate) fn get_payment(
    shared: &Shared,
    caller: Caller,
    account_id: u64,
    payment_id: u64,
) -> Result<Response, ApiError> {
    let item = {
        let world = shared.world();
        own_account(&world, caller, account_id)?;
        world
            .payments
            .iter()
            .chain(&world.received)
            .find(|p| p.id == payment_id && p.account_id == account_id)
            .map(|p| world.payment_json(p))
            .ok_or_else(|| ApiError::not_found("Payment not found."))?
    };
    Ok(wire::ok(shared, vec![item]))
}

pub(crate) fn create_request_inquiry(
    shared: &Shared,
    caller: Caller,
    account_id: u64,
    call: &Call<'_>,
) -> Result<Response, ApiError> {
    #[derive(Deserialize)]
    struct Body {
        amount_inquired: Amount,
        counterparty_alias: Alias,
        description: Option<String>,
    }
    let body: Body = parse_body(call.body)?;
    let cents = cents_of(&body.amount_inquired)?;
    check_alias(&body.counterparty_alias)?;
    let sugar_daddy = body.counterparty_alias.kind == "EMAIL"
        && body
            .counterparty_alias
            .value
            .eq_ignore_ascii_case(SUGAR_DADDY);
    if sugar_daddy && cents > SUGAR_DADDY_MAX_CENTS {
        return Err(ApiError::bad_request(
            "The sugar daddy gives at most 500.00 EUR per request.",
        ));
    }
    let mut world = shared.world();
    own_account(&world, caller, account_id)?;
    let id = world.next_id();
    let now = SystemTime::now();
    // In the sandbox the sugar daddy accepts at once; other inquiries stay pending.
    let inquiry = RequestInquiry {
        id,
        account_id,
        amount_cents: cents,
        counterparty: pointer_json(&body.counterparty_alias),
        description: body.description.unwrap_or_default(),
        status: if sugar_daddy { "ACCEPTED" } else { "PENDING" },
        created: now,
    };
    let mut events = Vec::new();
    if sugar_daddy {
        if let Some(a) = world.accounts.get_mut(&account_id) {
            a.balance_cents += cents;
        }
        events.push(crate::notify::Event {
            owner: caller.owner,
            account: Some(account_id),
            only: None,
            category: "REQUEST",
            event_type: "REQUEST_INQUIRY_ACCEPTED",
            object: world.request_inquiry_json(&inquiry),
        });
        // The money arrives as a payment from the sugar daddy (not counted as one of
        // the payments made through the API).
        let incoming = Payment {
            id: world.next_id(),
            account_id,
            amount_cents: -cents,
            counterparty: json!({"type": "EMAIL", "value": SUGAR_DADDY, "name": "Sugar Daddy"}),
            description: "sandbox top-up".to_owned(),
            created: now,
        };
        events.push(crate::notify::Event {
            owner: caller.owner,
            account: Some(account_id),
            only: None,
            category: "MUTATION",
            event_type: "MUTATION_RECEIVED",
            object: world.payment_json(&incoming),
        });
        world.received.push(incoming);
    }
    world.request_inquiries.push(inquiry);
    drop(world);
    crate::notify::emit(shared, &events);
    Ok(wire::created_id(shared, id))
}

pub(crate) fn list_request_inquiries(
    shared: &Shared,
    caller: Caller,
    account_id: u64,
    call: &Call<'_>,
) -> Result<Response, ApiError> {
    let items = {
        let world = shared.world();
        own_account(&world, caller, account_id)?;
        world
            .request_inquiries
            .iter()
            .filter(|r| r.account_id == account_id)
            .map(|r| (r.id, world.request_inquiry_json(r)))
            .collect()
    };
    paginated(shared, items, call)
}

pub(crate) fn get_request_inquiry(
    shared: &Shared,
    caller: Caller,
    account_id: u64,
    inquiry_id: u64,
) -> Result<Response, ApiError> {
    let item = {
        let world = shared.world();
        own_account(&world, caller, account_id)?;
        world
            .request_inquiries
            .iter()
            .find(|r| r.id == inquiry_id && r.account_id == account_id)
            .map(|r| world.request_inquiry_json(r))
            .ok_or_else(|| ApiError::not_found("RequestInquiry not found."))?
    };
    Ok(wire::ok(shared, vec![item]))
}

/// `POST .../draft-payment`: stored `PENDING` for the holder to accept in the app; no
/// money moves, so the balance is not checked (bunq checks it at acceptance).
pub(crate) fn create_draft_payment(
    shared: &Shared,
    caller: Caller,
    account_id: u64,
    call: &Call<'_>,
) -> Result<Response, ApiError> {
    #[derive(Deserialize)]
    struct Entry {
        amount: Amount,
        counterparty_alias: Alias,
        description: Option<String>,
    }
    #[derive(Deserialize)]
    struct Body {
        entries: Vec<Entry>,
        number_of_required_accepts: u32,
    }
    let body: Body = parse_body(call.body)?;
    // bunq: "Currently only 1 is valid."
    if body.number_of_required_accepts != 1 {
        return Err(ApiError::bad_request(
            "The number_of_required_accepts must be 1.",
        ));
    }
    if body.entries.is_empty() {
        return Err(ApiError::bad_request(
            "A draft payment needs at least one entry.",
        ));
    }
    let entries = body
        .entries
        .iter()
        .map(|e| {
            check_alias(&e.counterparty_alias)?;
            Ok((
                cents_of(&e.amount)?,
                pointer_json(&e.counterparty_alias),
                e.description.clone().unwrap_or_default(),
            ))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let mut world = shared.world();
    own_account(&world, caller, account_id)?;
    let id = world.next_id();
    world.draft_payments.push(DraftPayment {
        id,
        account_id,
        entries,
        status: "PENDING",
        created: SystemTime::now(),
    });
    drop(world);
    Ok(wire::created_id(shared, id))
}

pub(crate) fn list_draft_payments(
    shared: &Shared,
    caller: Caller,
    account_id: u64,
    call: &Call<'_>,
) -> Result<Response, ApiError> {
    let items = {
        let world = shared.world();
        own_account(&world, caller, account_id)?;
        world
            .draft_payments
            .iter()
            .filter(|d| d.account_id == account_id)
            .map(|d| (d.id, world.draft_payment_json(d)))
            .collect()
    };
    paginated(shared, items, call)
}

pub(crate) fn get_draft_payment(
    shared: &Shared,
    caller: Caller,
    account_id: u64,
    draft_id: u64,
) -> Result<Response, ApiError> {
    let item = {
        let world = shared.world();
        own_account(&world, caller, account_id)?;
        world
            .draft_payments
            .iter()
            .find(|d| d.id == draft_id && d.account_id == account_id)
            .map(|d| world.draft_payment_json(d))
            .ok_or_else(|| ApiError::not_found("DraftPayment not found."))?
    };
    Ok(wire::ok(shared, vec![item]))
}

fn pointer_json(alias: &Alias) -> Value {
    json!({"type": alias.kind, "value": alias.value, "name": alias.name})
}

/// The `PAYMENT` and `MUTATION` callbacks of a payment booked on `account` of `owner`
/// (`what`: `CREATED` for the payer, `RECEIVED` for the payee).
fn money_events(owner: u64, account: u64, payment: Value, what: &str) -> Vec<crate::notify::Event> {
    let (payment_type, mutation_type) = if what == "CREATED" {
        ("PAYMENT_CREATED", "MUTATION_CREATED")
    } else {
        ("PAYMENT_RECEIVED", "MUTATION_RECEIVED")
    };
    [("PAYMENT", payment_type), ("MUTATION", mutation_type)]
        .into_iter()
        .map(|(category, event_type)| crate::notify::Event {
            owner,
            account: Some(account),
            only: None,
            category,
            event_type,
            object: payment.clone(),
        })
        .collect()
}

/// Answers a list the way bunq does: newest first, `count` items (default 10, at most
/// 200), `older_id`/`newer_id` cursors, and `Pagination` URLs with `null` where there is
/// nothing to fetch.
fn paginated(
    shared: &Shared,
    mut items: Vec<(u64, Value)>,
    call: &Call<'_>,
) -> Result<Response, ApiError> {
    let (page, pagination) = paginate(&mut items, call.query, call.list_path)?;
    let body = json!({"Response": page, "Pagination": pagination});
    Ok(wire::signed(
        shared,
        StatusCode::OK,
        body.to_string().into_bytes(),
    ))
}

fn paginate(
    items: &mut [(u64, Value)],
    query: &str,
    path: &str,
) -> Result<(Vec<Value>, Value), ApiError> {
    let mut count = DEFAULT_COUNT;
    let mut older_id = None;
    let mut newer_id = None;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        let number = || {
            v.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("The parameter {k} must be a number.")))
        };
        match k.as_ref() {
            "count" => count = usize::try_from(number()?).unwrap_or(usize::MAX),
            "older_id" => older_id = Some(number()?),
            "newer_id" => newer_id = Some(number()?),
            _ => {}
        }
    }
    if count == 0 || count > MAX_COUNT {
        return Err(ApiError::bad_request(format!(
            "The count must be between 1 and {MAX_COUNT}."
        )));
    }
    items.sort_by_key(|item| std::cmp::Reverse(item.0));
    let page: Vec<&(u64, Value)> = if let Some(newer) = newer_id {
        // The `count` items just above the cursor, still newest first.
        let above: Vec<&(u64, Value)> = items.iter().filter(|(id, _)| *id > newer).collect();
        let skip = above.len().saturating_sub(count);
        above.into_iter().skip(skip).collect()
    } else {
        items
            .iter()
            .filter(|(id, _)| older_id.is_none_or(|o| *id < o))
            .take(count)
            .collect()
    };
    let newest = page.first().map(|(id, _)| *id);
    let oldest = page.last().map(|(id, _)| *id);
    let url = |cursor: &str, id: u64| format!("{path}?count={count}&{cursor}={id}");
    let older_url = oldest
        .filter(|o| items.iter().any(|(id, _)| id < o))
        .map(|o| url("older_id", o));
    let newer_url = newest
        .filter(|n| items.iter().any(|(id, _)| id > n))
        .map(|n| url("newer_id", n));
    // Where to poll for items that do not exist yet: only once nothing newer is left.
    let future_url = match (&newer_url, newest.or(newer_id)) {
        (None, Some(n)) => Some(url("newer_id", n)),
        _ => None,
    };
    let values = page.into_iter().map(|(_, v)| v.clone()).collect();
    Ok((
        values,
        json!({"future_url": future_url, "newer_url": newer_url, "older_url": older_url}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(n: u64) -> Vec<(u64, Value)> {
        (1..=n).map(|i| (i, json!(i))).collect()
    }

    #[test]
    fn pages_newest_first_with_cursors() {
        let mut all = items(5);
        let (page, p) = paginate(&mut all, "count=2", "/v1/x").unwrap();
        assert_eq!(page, vec![json!(5), json!(4)]);
        assert_eq!(p["older_url"], "/v1/x?count=2&older_id=4");
        assert_eq!(p["newer_url"], Value::Null);
        assert_eq!(p["future_url"], "/v1/x?count=2&newer_id=5");

        let (page, p) = paginate(&mut all, "count=2&older_id=4", "/v1/x").unwrap();
        assert_eq!(page, vec![json!(3), json!(2)]);
        assert_eq!(p["newer_url"], "/v1/x?count=2&newer_id=3");

        let (page, _) = paginate(&mut all, "count=2&newer_id=2", "/v1/x").unwrap();
        assert_eq!(page, vec![json!(4), json!(3)]);
    }

    #[test]
    fn rejects_count_out_of_range_and_non_numbers() {
        let mut all = items(1);
        assert!(paginate(&mut all, "count=201", "/v1/x").is_err());
        assert!(paginate(&mut all, "count=0", "/v1/x").is_err());
        assert!(paginate(&mut all, "older_id=abc", "/v1/x").is_err());
        let (page, p) = paginate(&mut all, "count=200", "/v1/x").unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(p["older_url"], Value::Null);
    }
}
