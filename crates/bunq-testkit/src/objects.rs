//! How bunq shows the fake's things: the JSON objects of users, accounts, OAuth
//! clients, payments, request-inquiries and draft-payments, and the labels
//! (`LabelUser`, `LabelMonetaryAccount`) bunq shows for the parties to a payment.

use std::time::Duration;

use serde_json::{Value, json};

use crate::world::{
    Account, AccountKind, DraftPayment, OauthClient, Payment, RequestInquiry, User, UserKind,
    World, format_cents, timestamp,
};

impl World {
    pub fn user_json(&self, user_id: u64, timeout: Duration) -> Value {
        let Some(user) = self.users.get(&user_id) else {
            return Value::Null;
        };
        let secs = timeout.as_secs();
        match user.kind {
            UserKind::Person => json!({"UserPerson": {
                "id": user.id,
                "created": timestamp(user.created),
                "updated": timestamp(user.created),
                "alias": [{"type": "EMAIL", "value": format!("user{}@example.com", user.id), "name": user.display_name}],
                "display_name": user.display_name,
                "public_nick_name": user.display_name,
                "first_name": "Sandbox",
                "last_name": format!("User {}", user.id),
                "legal_name": user.display_name,
                "status": "ACTIVE",
                "sub_status": "NONE",
                "language": "en_US",
                "region": "nl_NL",
                "session_timeout": secs,
            }}),
            UserKind::PaymentServiceProvider => psp_json(user, secs),
        }
    }

    /// `{"UserApiKey":{...}}` for a grant; both sides carry `session_timeout`.
    pub fn user_api_key_json(&self, grant_id: u64, timeout: Duration) -> Value {
        let Some(grant) = self.grants.get(&grant_id) else {
            return Value::Null;
        };
        let requested_by = match self.users.get(&grant.requested_by) {
            // bunq reports the OAuth client's owner as a payment service provider.
            Some(u) => psp_json(u, timeout.as_secs()),
            None => Value::Null,
        };
        json!({"UserApiKey": {
            "id": grant.id,
            "created": timestamp(grant.created),
            "updated": timestamp(grant.created),
            "requested_by_user": requested_by,
            "granted_by_user": self.user_json(grant.granted_by, timeout),
        }})
    }

    pub fn account_json(&self, account: &Account) -> Value {
        let name = self.display_name(account.user_id);
        let mut object = json!({
            "id": account.id,
            "created": timestamp(account.created),
            "updated": timestamp(account.created),
            "currency": "EUR",
            "description": account.description,
            "daily_limit": {"value": "1000.00", "currency": "EUR"},
            "balance": {"value": format_cents(account.balance_cents), "currency": "EUR"},
            "alias": [{"type": "IBAN", "value": account.iban, "name": name}],
            "public_uuid": uuid::Uuid::from_u64_pair(0x6275_6e71_6661_6b65, account.id).to_string(),
            "status": account.status,
            "sub_status": "NONE",
            "reason": "NONE",
            "reason_description": "",
            "user_id": account.user_id,
            "display_name": name,
        });
        // What each kind adds to the common fields (bunq's object references).
        let extra = match account.kind {
            AccountKind::Bank => json!({}),
            AccountKind::Savings => json!({
                "savings_goal": {"value": "1000.00", "currency": "EUR"},
                "savings_goal_progress": account.balance_cents as f64 / 100_000.0,
            }),
            AccountKind::Joint => json!({
                "all_co_owner": [
                    {"alias": self.label_user(account.user_id), "status": "ACCEPTED"},
                ],
                "overdraft_limit": {"value": "0.00", "currency": "EUR"},
            }),
            AccountKind::External => json!({"service": "OPEN_BANKING"}),
        };
        if let (Some(object), Value::Object(extra)) = (object.as_object_mut(), extra) {
            object.extend(extra);
        }
        json!({ account.kind.type_name(): object })
    }

    fn display_name(&self, user_id: u64) -> String {
        self.users
            .get(&user_id)
            .map(|u| u.display_name.clone())
            .unwrap_or_default()
    }

    /// A user as others see it (`LabelUser`).
    pub fn label_user(&self, user_id: u64) -> Value {
        let name = self.display_name(user_id);
        json!({
            "uuid": uuid::Uuid::from_u64_pair(0x6275_6e71_7573_6572, user_id).to_string(),
            "display_name": name,
            "public_nick_name": name,
            "country": "NL",
            "avatar": null,
        })
    }

    /// The public side of one of our accounts (`LabelMonetaryAccount`), as bunq shows
    /// it in a payment's `alias`.
    pub fn label_of_account(&self, account_id: u64) -> Value {
        let Some(account) = self.accounts.get(&account_id) else {
            return Value::Null;
        };
        json!({
            "iban": account.iban,
            "is_light": false,
            "display_name": self.display_name(account.user_id),
            "avatar": null,
            "label_user": self.label_user(account.user_id),
            "country": "NL",
        })
    }

    /// The `LabelMonetaryAccount` bunq shows for a counterparty named by `pointer`
    /// (`{type, value, name}`): an account of the fake by its IBAN, else the name given
    /// (or the address itself) with the IBAN if it was one.
    pub fn label_of_pointer(&self, pointer: &Value) -> Value {
        let kind = pointer.get("type").and_then(Value::as_str).unwrap_or("");
        let value = pointer.get("value").and_then(Value::as_str).unwrap_or("");
        if kind == "IBAN" {
            let iban = value.replace(' ', "");
            if let Some(account) = self.accounts.values().find(|a| a.iban == iban) {
                return self.label_of_account(account.id);
            }
        }
        let name = pointer
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .unwrap_or(value);
        json!({
            "iban": (kind == "IBAN").then_some(value),
            "is_light": null,
            "display_name": name,
            "avatar": null,
            "label_user": {
                "uuid": null,
                "display_name": name,
                "public_nick_name": name,
                "country": "NL",
                "avatar": null,
            },
            "country": "NL",
        })
    }

    pub fn oauth_client_json(client: &OauthClient) -> Value {
        let callbacks: Vec<Value> = client
            .callback_urls
            .iter()
            .map(|c| {
                json!({"id": c.id, "created": timestamp(c.created), "updated": timestamp(c.created), "url": c.url})
            })
            .collect();
        json!({"OauthClient": {
            "id": client.id,
            "created": timestamp(client.created),
            "updated": timestamp(client.created),
            "status": client.status,
            "display_name": client.display_name,
            "client_id": client.client_id,
            "secret": client.secret,
            "callback_url": callbacks,
        }})
    }

    pub fn payment_json(&self, payment: &Payment) -> Value {
        json!({"Payment": {
            "id": payment.id,
            "created": timestamp(payment.created),
            "updated": timestamp(payment.created),
            "monetary_account_id": payment.account_id,
            "amount": {"value": format_cents(-payment.amount_cents), "currency": "EUR"},
            "alias": self.label_of_account(payment.account_id),
            "counterparty_alias": self.label_of_pointer(&payment.counterparty),
            "description": payment.description,
            "type": "BUNQ",
            "sub_type": "PAYMENT",
            "merchant_reference": null,
            "attachment": [],
        }})
    }

    pub fn request_inquiry_json(&self, inquiry: &RequestInquiry) -> Value {
        let accepted = inquiry.status == "ACCEPTED";
        let amount = json!({"value": format_cents(inquiry.amount_cents), "currency": "EUR"});
        json!({"RequestInquiry": {
            "id": inquiry.id,
            "created": timestamp(inquiry.created),
            "updated": timestamp(inquiry.created),
            "time_responded": accepted.then(|| timestamp(inquiry.created)),
            "time_expiry": null,
            "monetary_account_id": inquiry.account_id,
            "amount_inquired": amount,
            "amount_responded": accepted.then_some(&amount),
            "status": inquiry.status,
            "description": inquiry.description,
            "merchant_reference": null,
            "user_alias_created": self.label_of_account(inquiry.account_id),
            "counterparty_alias": self.label_of_pointer(&inquiry.counterparty),
            "attachment": [],
            "minimum_age": null,
            "require_address": null,
            "bunqme_share_url": null,
            "redirect_url": null,
            "batch_id": null,
            "scheduled_id": null,
        }})
    }

    pub fn draft_payment_json(&self, draft: &DraftPayment) -> Value {
        let owner = self.accounts.get(&draft.account_id).map(|a| a.user_id);
        let entries: Vec<Value> = draft
            .entries
            .iter()
            .map(|(cents, pointer, description)| {
                json!({
                    "amount": {"value": format_cents(*cents), "currency": "EUR"},
                    "alias": self.label_of_account(draft.account_id),
                    "counterparty_alias": self.label_of_pointer(pointer),
                    "description": description,
                    "type": "BUNQ",
                    "attachment": [],
                    "merchant_reference": null,
                })
            })
            .collect();
        json!({"DraftPayment": {
            "id": draft.id,
            "created": timestamp(draft.created),
            "updated": timestamp(draft.created),
            "monetary_account_id": draft.account_id,
            "status": draft.status,
            "type": "BUNQ",
            "user_alias_created": owner.map(|o| self.label_user(o)),
            "responses": [],
            "entries": entries,
            "object": null,
        }})
    }
}

fn psp_json(user: &User, secs: u64) -> Value {
    json!({"UserPaymentServiceProvider": {
        "id": user.id,
        "created": timestamp(user.created),
        "updated": timestamp(user.created),
        "display_name": user.display_name,
        "public_nick_name": user.display_name,
        "status": "ACTIVE",
        "session_timeout": secs,
    }})
}
