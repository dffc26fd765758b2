//! Every typed call against the fake bunq (`bunq-testkit`), as an OAuth application
//! makes them: through a `UserApiKey` session acting on the end user's accounts.
#![allow(clippy::unwrap_used)]

mod common;

use bunq_api::{
    AccountStatus, Amount, DraftPaymentStatus, FilterScope, MonetaryAccount, MonetaryAccountId,
    NewDraftPayment, NewPayment, NewRequestInquiry, NotificationFilter, PageSize, Pointer,
    RequestInquiryStatus,
};
use bunq_session::{Error, UserKind};
use bunq_testkit::AccountKind;
use common::fake_user;
use futures::TryStreamExt as _;

fn sugar_daddy(amount: &str) -> NewRequestInquiry {
    NewRequestInquiry::new(
        Amount::eur(amount).unwrap(),
        Pointer::email("sugardaddy@bunq.com").unwrap(),
        "top up",
    )
    .unwrap()
}

#[tokio::test]
async fn user_and_accounts_of_every_kind_active_first() {
    let (fake, user, api) = fake_user().await;
    let savings = fake
        .create_monetary_account(user.user_id, AccountKind::Savings, "Holiday")
        .unwrap();
    let joint = fake
        .create_monetary_account(user.user_id, AccountKind::Joint, "Household")
        .unwrap();
    let external = fake
        .create_monetary_account(user.user_id, AccountKind::External, "Other bank")
        .unwrap();
    assert!(fake.set_monetary_account_status(user.monetary_account_ids[1], "CANCELLED"));

    let me = api.user().await.unwrap();
    assert_eq!(me.kind, UserKind::UserApiKey);
    assert_eq!(
        me.display_name,
        Some(format!("Sandbox User {}", user.user_id))
    );

    let accounts = api.monetary_accounts().await.unwrap();
    let listed: Vec<(&str, u64)> = accounts.iter().map(|a| (a.type_name(), a.id().0)).collect();
    // bunq's order (newest first), the cancelled account moved last.
    assert_eq!(
        listed,
        [
            ("MonetaryAccountExternal", external),
            ("MonetaryAccountJoint", joint),
            ("MonetaryAccountSavings", savings),
            ("MonetaryAccountBank", user.monetary_account_ids[0]),
            ("MonetaryAccountBank", user.monetary_account_ids[1]),
        ]
    );
    assert_eq!(accounts[4].info().status, Some(AccountStatus::Cancelled));
    assert!(accounts[..4].iter().all(MonetaryAccount::is_active));
    assert!(accounts.iter().all(|a| a.info().iban().is_some()));

    let one = api
        .monetary_account(MonetaryAccountId(savings))
        .await
        .unwrap();
    let MonetaryAccount::Savings(s) = one else {
        panic!("{one:?}");
    };
    assert_eq!(s.info.description.as_deref(), Some("Holiday"));
    assert_eq!(s.savings_goal.unwrap().value(), "1000.00");
    let MonetaryAccount::Joint(j) = api
        .monetary_account(MonetaryAccountId(joint))
        .await
        .unwrap()
    else {
        panic!("not joint");
    };
    assert_eq!(j.co_owners.len(), 1);
    let missing = api
        .monetary_account(MonetaryAccountId(1))
        .await
        .unwrap_err();
    assert!(
        matches!(missing, Error::Api { status: 404, .. }),
        "{missing:?}"
    );
}

#[tokio::test]
async fn payments_are_made_read_and_listed_across_pages() {
    let (fake, user, api) = fake_user().await;
    let from = MonetaryAccountId(user.monetary_account_ids[0]);
    let to = MonetaryAccountId(user.monetary_account_ids[1]);
    api.create_request_inquiry(from, &sugar_daddy("100"))
        .await
        .unwrap();
    let to_iban = api
        .monetary_account(to)
        .await
        .unwrap()
        .info()
        .iban()
        .unwrap()
        .to_owned();

    let rent = NewPayment::new(
        Amount::eur("30.5").unwrap(),
        Pointer::iban(&to_iban, "Me").unwrap(),
        "rent",
    )
    .unwrap();
    let first = api
        .create_payment(from, &rent)
        .request_id("rent-1")
        .await
        .unwrap();
    // The same request id again: bunq refuses it unexecuted.
    let again = api
        .create_payment(from, &rent)
        .request_id("rent-1")
        .await
        .unwrap_err();
    assert!(
        matches!(&again, Error::Api { status: 400, .. }),
        "{again:?}"
    );
    let second = api.create_payment(from, &rent).await.unwrap();
    assert_eq!(fake.payment_count(), 2);
    assert_eq!(fake.balance(user.user_id, from.0), Some("39.00".to_owned()));

    let read = api.payment(from, first).await.unwrap();
    assert_eq!(read.amount.value(), "-30.50");
    assert_eq!(read.monetary_account_id, from);
    assert_eq!(read.description.as_deref(), Some("rent"));
    let payee = read.counterparty_alias.unwrap();
    assert_eq!(payee.iban.as_deref(), Some(to_iban.as_str()));

    // One per page: the two payments, then the top-up, over three calls.
    let listed: Vec<_> = api
        .payments(from, PageSize::new(1).unwrap())
        .try_collect()
        .await
        .unwrap();
    let amounts: Vec<(u64, String)> = listed.iter().map(|p| (p.id.0, p.amount.value())).collect();
    assert_eq!(amounts[0], (second.0, "-30.50".to_owned()));
    assert_eq!(amounts[1], (first.0, "-30.50".to_owned()));
    assert_eq!(amounts[2].1, "100.00");
    assert_eq!(listed.len(), 3);
    assert_eq!(
        fake.calls("GET /user/{id}/monetary-account/{aid}/payment"),
        3,
        "three pages; the last has no older_url"
    );
    let received: Vec<_> = api
        .payments(to, PageSize::default())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(received.len(), 2);
    assert!(received.iter().all(|p| p.amount.is_positive()));
}

#[tokio::test]
async fn request_inquiries_are_made_read_and_listed() {
    let (fake, user, api) = fake_user().await;
    let account = MonetaryAccountId(user.monetary_account_ids[0]);
    let topped = api
        .create_request_inquiry(account, &sugar_daddy("20"))
        .await
        .unwrap();
    let lunch = NewRequestInquiry::new(
        Amount::eur("7.50").unwrap(),
        Pointer::email("bob@example.com")
            .unwrap()
            .with_name("Bob")
            .unwrap(),
        "lunch",
    )
    .unwrap();
    let pending = api.create_request_inquiry(account, &lunch).await.unwrap();
    assert_eq!(
        fake.balance(user.user_id, account.0),
        Some("20.00".to_owned())
    );

    let read = api.request_inquiry(account, pending).await.unwrap();
    assert_eq!(read.status, Some(RequestInquiryStatus::Pending));
    assert_eq!(read.amount_inquired.value(), "7.50");
    assert_eq!(read.amount_responded, None);
    assert_eq!(
        read.counterparty_alias.unwrap().display_name.as_deref(),
        Some("Bob")
    );
    let accepted = api.request_inquiry(account, topped).await.unwrap();
    assert_eq!(accepted.status, Some(RequestInquiryStatus::Accepted));
    assert_eq!(accepted.amount_responded.unwrap().value(), "20.00");

    let listed: Vec<_> = api
        .request_inquiries(account, PageSize::new(1).unwrap())
        .try_collect()
        .await
        .unwrap();
    let ids: Vec<_> = listed.iter().map(|r| r.id).collect();
    assert_eq!(ids, [pending, topped]);
}

#[tokio::test]
async fn draft_payments_are_proposed_read_and_listed_without_paying() {
    let (fake, user, api) = fake_user().await;
    let account = MonetaryAccountId(user.monetary_account_ids[0]);
    let landlord = Pointer::iban("NL91ABNA0417164300", "J. Landlord").unwrap();
    let draft = NewDraftPayment::new(vec![
        NewPayment::new(Amount::eur("950").unwrap(), landlord.clone(), "rent").unwrap(),
        NewPayment::new(Amount::eur("45.10").unwrap(), landlord, "water")
            .unwrap()
            .merchant_reference("contract-17"),
    ])
    .unwrap();
    let id = api.create_draft_payment(account, &draft).await.unwrap();
    assert_eq!(fake.payment_count(), 0);

    let read = api.draft_payment(account, id).await.unwrap();
    assert_eq!(read.status, Some(DraftPaymentStatus::Pending));
    assert_eq!(read.monetary_account_id, account);
    let entries: Vec<(String, Option<&str>)> = read
        .entries
        .iter()
        .map(|e| (e.amount.value(), e.description.as_deref()))
        .collect();
    assert_eq!(
        entries,
        [
            ("950.00".to_owned(), Some("rent")),
            ("45.10".to_owned(), Some("water"))
        ]
    );
    assert_eq!(
        read.entries[0]
            .counterparty_alias
            .as_ref()
            .and_then(|c| c.iban.as_deref()),
        Some("NL91ABNA0417164300")
    );

    let second = api.create_draft_payment(account, &draft).await.unwrap();
    let listed: Vec<_> = api
        .draft_payments(account, PageSize::default())
        .try_collect()
        .await
        .unwrap();
    let ids: Vec<_> = listed.iter().map(|d| d.id).collect();
    assert_eq!(ids, [second, id]);
}

#[tokio::test]
async fn notification_filters_are_set_and_read_through_the_api() {
    let (_fake, user, api) = fake_user().await;
    let wanted = [
        NotificationFilter::new("PAYMENT", "https://app.example/bunq"),
        NotificationFilter::new("DRAFT_PAYMENT", "https://app.example/bunq"),
    ];
    let stored = api
        .set_notification_filters(FilterScope::User, &wanted)
        .await
        .unwrap();
    assert_eq!(stored, wanted);
    assert_eq!(
        api.notification_filters(FilterScope::User).await.unwrap(),
        wanted
    );
    let account = FilterScope::MonetaryAccount(user.monetary_account_ids[0]);
    assert!(api.notification_filters(account).await.unwrap().is_empty());
}

#[test]
fn lists_and_calls_are_send_for_spawned_tasks() {
    fn send<T: Send>(_: &T) {}
    fn check(api: &bunq_api::UserApi<bunq_session::MemoryContextStore>) {
        let account = MonetaryAccountId(1);
        send(&api.payments(account, PageSize::MAX));
        send(&api.monetary_accounts());
        let payment = NewPayment::new(
            Amount::eur("1").unwrap(),
            Pointer::email("a@b.nl").unwrap(),
            "",
        )
        .unwrap();
        send(&std::future::IntoFuture::into_future(
            api.create_payment(account, &payment),
        ));
    }
    let _ = check;
}
