//! The exact request of every typed call (method, path, query, the headers that matter,
//! the JSON body byte for byte, since it is what is signed), against mockito answering
//! as bunq does; and how lists follow bunq's pagination.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use bunq_api::{
    Amount, DraftPaymentId, FilterScope, MonetaryAccount, MonetaryAccountId, NewDraftPayment,
    NewPayment, NewRequestInquiry, NotificationFilter, PageSize, PaymentId, Pointer,
    RequestInquiryId,
};
use bunq_session::{Error, SendFailure};
use common::{answers, created, fixture, mock_api, session_call};
use futures::{StreamExt as _, TryStreamExt as _};
use mockito::Matcher;

const ACCOUNT: MonetaryAccountId = MonetaryAccountId(30398);

fn query(q: &str) -> Matcher {
    Matcher::Exact(q.to_owned())
}

fn rent() -> NewPayment {
    NewPayment::new(
        Amount::eur("950").unwrap(),
        Pointer::iban("NL91 ABNA 0417 1643 00", "J. Landlord").unwrap(),
        "Rent March",
    )
    .unwrap()
}

#[tokio::test]
async fn user_gets_the_sessions_user() {
    let (mut server, api) = mock_api().await;
    let mock = answers(
        session_call(&mut server, "GET", "/v1/user/7731").match_body(""),
        &fixture("session_server_user_api_key.json"),
    )
    .create_async()
    .await;
    let user = api.user().await.unwrap();
    mock.assert_async().await;
    assert_eq!(user.kind, bunq_session::UserKind::UserApiKey);
    assert_eq!(user.display_name.as_deref(), Some("Jodi"));
}

#[tokio::test]
async fn monetary_accounts_list_every_kind_over_every_page_active_first() {
    let (mut server, api) = mock_api().await;
    let first = answers(
        session_call(&mut server, "GET", "/v1/user/7731/monetary-account")
            .match_query(query("count=200"))
            .match_body(""),
        &fixture("api/monetary_account_list.json"),
    )
    .create_async()
    .await;
    // The fixture's `older_url` (`count=5&older_id=30377`) leads here, as given.
    let second = answers(
        session_call(&mut server, "GET", "/v1/user/7731/monetary-account")
            .match_query(query("count=5&older_id=30377")),
        r#"{"Response":[{"MonetaryAccountBank":{"id":30001,"status":"ACTIVE"}}],"Pagination":{"older_url":null}}"#,
    )
    .create_async()
    .await;
    let accounts = api.monetary_accounts().await.unwrap();
    first.assert_async().await;
    second.assert_async().await;
    let order: Vec<(u64, bool)> = accounts.iter().map(|a| (a.id().0, a.is_active())).collect();
    assert_eq!(
        order,
        [
            (30398, true),
            (30405, true),
            (30420, true),
            (30001, true),
            (30412, false),
            (30377, false)
        ]
    );
}

#[tokio::test]
async fn monetary_account_reads_one_of_any_kind() {
    let (mut server, api) = mock_api().await;
    let mock = answers(
        session_call(&mut server, "GET", "/v1/user/7731/monetary-account/30405"),
        r#"{"Response":[{"MonetaryAccountSavings":{"id":30405,"status":"ACTIVE","savings_goal":{"value":"10.00","currency":"EUR"}}}]}"#,
    )
    .create_async()
    .await;
    let account = api
        .monetary_account(MonetaryAccountId(30405))
        .await
        .unwrap();
    mock.assert_async().await;
    let MonetaryAccount::Savings(savings) = account else {
        panic!("{account:?}");
    };
    assert_eq!(savings.savings_goal.unwrap().value(), "10.00");
}

#[tokio::test]
async fn create_payment_posts_the_typed_body_with_the_callers_request_id() {
    let (mut server, api) = mock_api().await;
    let mock = answers(
        session_call(&mut server, "POST", "/v1/user/7731/monetary-account/30398/payment")
            .match_header("x-bunq-client-request-id", "rent-2024-03")
            .match_body(
                r#"{"amount":{"value":"950.00","currency":"EUR"},"counterparty_alias":{"type":"IBAN","value":"NL91ABNA0417164300","name":"J. Landlord"},"description":"Rent March","merchant_reference":"contract-17"}"#,
            ),
        &created(208900),
    )
    .expect(1)
    .create_async()
    .await;
    let payment = rent().merchant_reference("contract-17");
    let id = api
        .create_payment(ACCOUNT, &payment)
        .request_id("rent-2024-03")
        .await
        .unwrap();
    mock.assert_async().await;
    assert_eq!(id, PaymentId(208900));
}

#[tokio::test]
async fn a_refused_payment_is_bunqs_error_and_is_not_resent() {
    let (mut server, api) = mock_api().await;
    let mock = answers(
        session_call(&mut server, "POST", "/v1/user/7731/monetary-account/30398/payment"),
        r#"{"Error":[{"error_description":"Insufficient balance.","error_description_translated":"Onvoldoende saldo."}]}"#,
    )
    .with_status(400)
    .with_header("x-bunq-client-response-id", "resp-9")
    .expect(1)
    .create_async()
    .await;
    let err = api.create_payment(ACCOUNT, &rent()).await.unwrap_err();
    mock.assert_async().await;
    match err {
        Error::Api {
            status,
            descriptions,
            response_id,
        } => {
            assert_eq!(status, 400);
            assert_eq!(descriptions, ["Insufficient balance."]);
            assert_eq!(response_id.as_deref(), Some("resp-9"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_create_past_its_deadline_is_not_sent() {
    let (mut server, api) = mock_api().await;
    let never = server
        .mock("POST", Matcher::Any)
        .expect(0)
        .create_async()
        .await;
    let past = Instant::now() - Duration::from_millis(1);
    let err = api
        .create_payment(ACCOUNT, &rent())
        .deadline(past)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::NotSent {
                reason: SendFailure::DeadlinePassed,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.may_have_reached_bunq());
    never.assert_async().await;
}

#[tokio::test]
async fn payments_follow_older_url_page_by_page() {
    let (mut server, api) = mock_api().await;
    let path = "/v1/user/7731/monetary-account/30398/payment";
    let first = answers(
        session_call(&mut server, "GET", path)
            .match_query(query("count=2"))
            .match_body(""),
        &fixture("api/payment_list.json"),
    )
    .expect(1)
    .create_async()
    .await;
    let second = answers(
        session_call(&mut server, "GET", path).match_query(query("count=2&older_id=208790")),
        r#"{"Response":[{"Payment":{"id":208001,"monetary_account_id":30398,"amount":{"value":"-1.00","currency":"EUR"}}}],"Pagination":{"future_url":null,"newer_url":"/v1/user/7731/monetary-account/30398/payment?count=2&newer_id=208001","older_url":null}}"#,
    )
    .expect(1)
    .create_async()
    .await;
    let size = PageSize::new(2).unwrap();

    // Lazily: reading one item fetches one page.
    let newest = api.payments(ACCOUNT, size).next().await.unwrap().unwrap();
    assert_eq!(newest.id, PaymentId(208864));
    first.assert_async().await;

    first.remove_async().await;
    let first = answers(
        session_call(&mut server, "GET", path).match_query(query("count=2")),
        &fixture("api/payment_list.json"),
    )
    .expect(1)
    .create_async()
    .await;
    let all: Vec<_> = api.payments(ACCOUNT, size).try_collect().await.unwrap();
    first.assert_async().await;
    second.assert_async().await;
    let ids: Vec<u64> = all.iter().map(|p| p.id.0).collect();
    assert_eq!(ids, [208864, 208790, 208001]);
}

#[tokio::test]
async fn a_page_link_to_another_host_ends_the_list_with_an_error() {
    let (mut server, api) = mock_api().await;
    let mock = answers(
        session_call(&mut server, "GET", "/v1/user/7731/monetary-account/30398/payment")
            .match_query(query("count=200")),
        r#"{"Response":[{"Payment":{"id":1,"monetary_account_id":30398,"amount":{"value":"1.00","currency":"EUR"}}}],"Pagination":{"older_url":"https://elsewhere.example/v1/user/7731/monetary-account/30398/payment?older_id=1"}}"#,
    )
    .expect(1)
    .create_async()
    .await;
    let items: Vec<Result<_, Error>> = api.payments(ACCOUNT, PageSize::MAX).collect().await;
    mock.assert_async().await;
    assert_eq!(items.len(), 2);
    assert_eq!(items[0].as_ref().unwrap().id, PaymentId(1));
    let err = items[1].as_ref().unwrap_err();
    assert!(
        matches!(err, Error::UnexpectedResponse { detail, .. } if detail.contains("outside the API base")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_page_linking_to_itself_ends_the_list() {
    let (mut server, api) = mock_api().await;
    let mock = answers(
        session_call(&mut server, "GET", "/v1/user/7731/monetary-account/30398/payment")
            .match_query(query("count=1")),
        r#"{"Response":[{"Payment":{"id":1,"monetary_account_id":30398,"amount":{"value":"1.00","currency":"EUR"}}}],"Pagination":{"older_url":"/v1/user/7731/monetary-account/30398/payment?count=1"}}"#,
    )
    .expect(1)
    .create_async()
    .await;
    let all: Vec<_> = api
        .payments(ACCOUNT, PageSize::new(1).unwrap())
        .try_collect()
        .await
        .unwrap();
    mock.assert_async().await;
    assert_eq!(all.len(), 1);
}

#[tokio::test]
async fn payment_reads_one_by_id() {
    let (mut server, api) = mock_api().await;
    let mock = answers(
        session_call(
            &mut server,
            "GET",
            "/v1/user/7731/monetary-account/30398/payment/208864",
        ),
        r#"{"Response":[{"Payment":{"id":208864,"monetary_account_id":30398,"amount":{"value":"-24.95","currency":"EUR"},"description":"order"}}]}"#,
    )
    .create_async()
    .await;
    let payment = api.payment(ACCOUNT, PaymentId(208864)).await.unwrap();
    mock.assert_async().await;
    assert_eq!(payment.description.as_deref(), Some("order"));
}

#[tokio::test]
async fn create_request_inquiry_posts_the_typed_body() {
    let (mut server, api) = mock_api().await;
    let mock = answers(
        session_call(
            &mut server,
            "POST",
            "/v1/user/7731/monetary-account/30398/request-inquiry",
        )
        .match_body(
            r#"{"amount_inquired":{"value":"7.50","currency":"EUR"},"counterparty_alias":{"type":"PHONE_NUMBER","value":"+31612345678","name":"Bob"},"description":"Lunch","allow_bunqme":true,"redirect_url":"https://app.example/paid"}"#,
        ),
        &created(4122),
    )
    .create_async()
    .await;
    let request = NewRequestInquiry::new(
        Amount::eur("7.5").unwrap(),
        Pointer::phone_number("+31 6 1234 5678")
            .unwrap()
            .with_name("Bob")
            .unwrap(),
        "Lunch",
    )
    .unwrap()
    .allow_bunqme(true)
    .redirect_url("https://app.example/paid");
    let id = api.create_request_inquiry(ACCOUNT, &request).await.unwrap();
    mock.assert_async().await;
    assert_eq!(id, RequestInquiryId(4122));
}

#[tokio::test]
async fn request_inquiries_list_with_the_page_size_asked() {
    let (mut server, api) = mock_api().await;
    let mock = answers(
        session_call(
            &mut server,
            "GET",
            "/v1/user/7731/monetary-account/30398/request-inquiry",
        )
        .match_query(query("count=200")),
        &fixture("api/request_inquiry.json"),
    )
    .create_async()
    .await;
    let all: Vec<_> = api
        .request_inquiries(ACCOUNT, PageSize::default())
        .try_collect()
        .await
        .unwrap();
    mock.assert_async().await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].id, RequestInquiryId(4121));
}

#[tokio::test]
async fn request_inquiry_reads_one_by_id() {
    let (mut server, api) = mock_api().await;
    let mock = answers(
        session_call(
            &mut server,
            "GET",
            "/v1/user/7731/monetary-account/30398/request-inquiry/4121",
        ),
        &fixture("api/request_inquiry.json"),
    )
    .create_async()
    .await;
    let inquiry = api
        .request_inquiry(ACCOUNT, RequestInquiryId(4121))
        .await
        .unwrap();
    mock.assert_async().await;
    assert_eq!(inquiry.amount_inquired.value(), "8.77");
}

#[tokio::test]
async fn create_draft_payment_posts_its_entries_and_one_required_accept() {
    let (mut server, api) = mock_api().await;
    let mock = answers(
        session_call(
            &mut server,
            "POST",
            "/v1/user/7731/monetary-account/30398/draft-payment",
        )
        .match_body(
            r#"{"entries":[{"amount":{"value":"950.00","currency":"EUR"},"counterparty_alias":{"type":"IBAN","value":"NL91ABNA0417164300","name":"J. Landlord"},"description":"Rent March"},{"amount":{"value":"45.10","currency":"EUR"},"counterparty_alias":{"type":"EMAIL","value":"water@example.com"},"description":""}],"number_of_required_accepts":1}"#,
        ),
        &created(918),
    )
    .create_async()
    .await;
    let water = NewPayment::new(
        Amount::eur("45.10").unwrap(),
        Pointer::email("water@example.com").unwrap(),
        "",
    )
    .unwrap();
    let draft = NewDraftPayment::new(vec![rent(), water]).unwrap();
    let id = api.create_draft_payment(ACCOUNT, &draft).await.unwrap();
    mock.assert_async().await;
    assert_eq!(id, DraftPaymentId(918));
}

#[tokio::test]
async fn draft_payments_list_with_the_page_size_asked() {
    let (mut server, api) = mock_api().await;
    let mock = answers(
        session_call(
            &mut server,
            "GET",
            "/v1/user/7731/monetary-account/30398/draft-payment",
        )
        .match_query(query("count=10")),
        &fixture("api/draft_payment.json"),
    )
    .create_async()
    .await;
    let all: Vec<_> = api
        .draft_payments(ACCOUNT, PageSize::new(10).unwrap())
        .try_collect()
        .await
        .unwrap();
    mock.assert_async().await;
    assert_eq!(all[0].entries.len(), 2);
}

#[tokio::test]
async fn draft_payment_reads_one_by_id() {
    let (mut server, api) = mock_api().await;
    let mock = answers(
        session_call(
            &mut server,
            "GET",
            "/v1/user/7731/monetary-account/30398/draft-payment/918",
        ),
        &fixture("api/draft_payment.json"),
    )
    .create_async()
    .await;
    let draft = api
        .draft_payment(ACCOUNT, DraftPaymentId(918))
        .await
        .unwrap();
    mock.assert_async().await;
    assert_eq!(draft.id, DraftPaymentId(918));
}

#[tokio::test]
async fn notification_filters_get_the_users_list() {
    let (mut server, api) = mock_api().await;
    let mock = answers(
        session_call(&mut server, "GET", "/v1/user/7731/notification-filter-url"),
        r#"{"Response":[{"NotificationFilterUrl":{"id":5,"category":"PAYMENT","notification_target":"https://app.example/bunq"}}]}"#,
    )
    .create_async()
    .await;
    let filters = api.notification_filters(FilterScope::User).await.unwrap();
    mock.assert_async().await;
    assert_eq!(
        filters,
        [NotificationFilter::new(
            "PAYMENT",
            "https://app.example/bunq"
        )]
    );
}

#[tokio::test]
async fn set_notification_filters_posts_the_whole_list_at_account_level() {
    let (mut server, api) = mock_api().await;
    let mock = answers(
        session_call(
            &mut server,
            "POST",
            "/v1/user/7731/monetary-account/30398/notification-filter-url",
        )
        .match_body(
            r#"{"notification_filters":[{"category":"MUTATION","notification_target":"https://app.example/bunq"}]}"#,
        ),
        r#"{"Response":[{"NotificationFilterUrl":{"id":6,"category":"MUTATION","notification_target":"https://app.example/bunq"}}]}"#,
    )
    .create_async()
    .await;
    let wanted = [NotificationFilter::new(
        "MUTATION",
        "https://app.example/bunq",
    )];
    let stored = api
        .set_notification_filters(FilterScope::MonetaryAccount(ACCOUNT.0), &wanted)
        .await
        .unwrap();
    mock.assert_async().await;
    assert_eq!(stored, wanted);
}
