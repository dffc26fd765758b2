//! Every response type read from a bunq example body in `fixtures/api/` (bunq's shapes:
//! see `fixtures/README.md`), field by field.
#![allow(clippy::unwrap_used)]

mod common;

use bunq_api::{
    AccountStatus, DraftPayment, DraftPaymentStatus, MonetaryAccount, MonetaryAccountId, Payment,
    PaymentId, PointerType, RequestInquiry, RequestInquiryStatus,
};
use bunq_session::Pagination;
use bunq_session::envelope;
use common::fixture;
use serde::Deserialize;

#[derive(Deserialize)]
struct Accounts {
    #[serde(rename = "Response")]
    response: Vec<MonetaryAccount>,
    #[serde(rename = "Pagination")]
    pagination: Pagination,
}

#[test]
fn monetary_accounts_of_every_kind_read_from_the_generic_list() {
    let page: Accounts = serde_json::from_str(&fixture("api/monetary_account_list.json")).unwrap();
    let kinds: Vec<(&str, u64)> = page
        .response
        .iter()
        .map(|a| (a.type_name(), a.id().0))
        .collect();
    assert_eq!(
        kinds,
        [
            ("MonetaryAccountJoint", 30412),
            ("MonetaryAccountBank", 30398),
            ("MonetaryAccountSavings", 30405),
            ("MonetaryAccountExternal", 30377),
            ("MonetaryAccountCard", 30420),
        ]
    );
    assert!(
        page.pagination
            .older_url
            .unwrap()
            .ends_with("older_id=30377")
    );

    let MonetaryAccount::Joint(joint) = &page.response[0] else {
        panic!("{:?}", page.response[0]);
    };
    assert_eq!(
        joint.info.status,
        Some(AccountStatus::Other("PENDING_ACCEPTANCE".to_owned()))
    );
    assert!(!page.response[0].is_active());
    let co_owners: Vec<(Option<&str>, Option<&str>)> = joint
        .co_owners
        .iter()
        .map(|c| {
            (
                c.alias.as_ref().and_then(|a| a.display_name.as_deref()),
                c.status.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        co_owners,
        [
            (Some("Mila"), Some("ACCEPTED")),
            (Some("Sem (partner)"), Some("PENDING"))
        ]
    );
    assert_eq!(joint.overdraft_limit.unwrap().value(), "0.00");

    let MonetaryAccount::Bank(bank) = &page.response[1] else {
        panic!("{:?}", page.response[1]);
    };
    let info = &bank.info;
    assert_eq!(info.id, MonetaryAccountId(30398));
    assert_eq!(info.iban(), Some("NL44BUNQ2061548622"));
    assert_eq!(info.alias[0].kind(), &PointerType::PhoneNumber);
    assert_eq!(info.balance.unwrap().minor_units(), 250_917);
    assert_eq!(info.daily_limit.unwrap().to_string(), "1000.00 EUR");
    assert_eq!(info.currency.unwrap().as_str(), "EUR");
    assert_eq!(info.description.as_deref(), Some("Main account"));
    assert_eq!(info.display_name.as_deref(), Some("M. de Vries"));
    assert_eq!(info.user_id, Some(7731));
    assert!(info.is_active());

    let MonetaryAccount::Savings(savings) = &page.response[2] else {
        panic!("{:?}", page.response[2]);
    };
    assert_eq!(savings.savings_goal.unwrap().value(), "1600.00");
    assert_eq!(savings.savings_goal_progress, Some(0.4));

    let MonetaryAccount::External(external) = &page.response[3] else {
        panic!("{:?}", page.response[3]);
    };
    assert_eq!(external.service.as_deref(), Some("OPEN_BANKING"));
    assert_eq!(external.info.status, Some(AccountStatus::Cancelled));
    assert_eq!(external.info.balance.unwrap().value(), "-35.20");

    let MonetaryAccount::Other {
        type_name, object, ..
    } = &page.response[4]
    else {
        panic!("{:?}", page.response[4]);
    };
    assert_eq!(type_name, "MonetaryAccountCard");
    assert_eq!(object["description"], "Travel card");
    assert_eq!(page.response[4].info().balance.unwrap().value(), "15.00");
}

#[test]
fn payments_made_and_received_read_with_both_parties() {
    let page =
        envelope::list::<Payment>(fixture("api/payment_list.json").as_bytes(), "Payment").unwrap();
    assert_eq!(page.items.len(), 2);
    let made = &page.items[0];
    assert_eq!(made.id, PaymentId(208864));
    assert_eq!(made.monetary_account_id, MonetaryAccountId(30398));
    assert_eq!(made.amount.value(), "-24.95");
    assert_eq!(made.payment_type.as_deref(), Some("IDEAL"));
    assert_eq!(made.sub_type.as_deref(), Some("PAYMENT"));
    assert_eq!(made.created.as_deref(), Some("2024-03-04 11:20:03.950184"));
    let ours = made.alias.as_ref().unwrap();
    assert_eq!(ours.iban.as_deref(), Some("NL44BUNQ2061548622"));
    assert_eq!(ours.is_light, Some(false));
    assert_eq!(
        ours.label_user
            .as_ref()
            .unwrap()
            .public_nick_name
            .as_deref(),
        Some("Mila")
    );
    let shop = made.counterparty_alias.as_ref().unwrap();
    assert_eq!((shop.iban.as_deref(), shop.is_light), (None, None));
    assert_eq!(shop.display_name.as_deref(), Some("Boekhandel Noord"));
    assert_eq!(shop.label_user.as_ref().unwrap().uuid, None);
    assert_eq!(made.balance_after_mutation.unwrap().value(), "2509.17");
    assert_eq!(made.merchant_reference, None);

    let received = &page.items[1];
    assert!(received.amount.is_positive());
    assert_eq!(received.merchant_reference.as_deref(), Some("PAY-2024-03"));
    let employer = received.counterparty_alias.as_ref().unwrap();
    assert_eq!(employer.swift_bic.as_deref(), Some("ABNANL2A"));
    assert_eq!(employer.country.as_deref(), Some("NL"));
    let pagination = page.pagination.unwrap();
    assert_eq!(pagination.newer_url, None);
    assert!(pagination.older_url.unwrap().ends_with("older_id=208790"));
}

#[test]
fn a_request_inquiry_reads_with_its_status_and_parties() {
    let inquiry: RequestInquiry = envelope::single(
        fixture("api/request_inquiry.json").as_bytes(),
        "RequestInquiry",
    )
    .unwrap();
    assert_eq!(inquiry.id.0, 4121);
    assert_eq!(inquiry.status, Some(RequestInquiryStatus::Revoked));
    assert_eq!(inquiry.amount_inquired.value(), "8.77");
    assert_eq!(inquiry.amount_responded, None);
    assert_eq!(inquiry.time_expiry, None);
    assert_eq!(
        inquiry.time_responded.as_deref(),
        Some("2024-02-22 23:37:35.889673")
    );
    assert_eq!(inquiry.description.as_deref(), Some("Cinema tickets"));
    assert_eq!(
        inquiry
            .counterparty_alias
            .as_ref()
            .and_then(|c| c.display_name.as_deref()),
        Some("Daan (nickname)")
    );
    assert_eq!(
        inquiry
            .user_alias_created
            .as_ref()
            .and_then(|c| c.iban.as_deref()),
        Some("NL44BUNQ2061548622")
    );
    assert_eq!(inquiry.monetary_account_id, MonetaryAccountId(30398));
}

#[test]
fn a_draft_payment_reads_with_its_entries() {
    let draft: DraftPayment =
        envelope::single(fixture("api/draft_payment.json").as_bytes(), "DraftPayment").unwrap();
    assert_eq!(draft.id.0, 918);
    assert_eq!(draft.status, Some(DraftPaymentStatus::Pending));
    assert_eq!(draft.draft_type.as_deref(), Some("BUNQ"));
    assert_eq!(
        draft
            .user_alias_created
            .as_ref()
            .and_then(|u| u.display_name.as_deref()),
        Some("Rent Collect B.V.")
    );
    assert_eq!(draft.entries.len(), 2);
    let rent = &draft.entries[0];
    assert_eq!(rent.amount.value(), "950.00");
    assert_eq!(rent.description.as_deref(), Some("Rent March"));
    assert_eq!(rent.merchant_reference.as_deref(), Some("contract-17"));
    assert_eq!(
        rent.counterparty_alias
            .as_ref()
            .and_then(|c| c.iban.as_deref()),
        Some("NL91ABNA0417164300")
    );
    assert_eq!(draft.entries[1].alias.as_ref().unwrap().label_user, None);
    assert_eq!(draft.object, None);
}
