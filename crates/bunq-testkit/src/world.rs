//! The fake bank's state: users, accounts, credentials, installations, sessions, OAuth
//! clients and codes, payments. Plain data behind one mutex; no I/O here.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bunq_signing::PublicKey;
use rand::Rng as _;
use serde_json::Value;

/// What a user is; decides the object name in responses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UserKind {
    Person,
    PaymentServiceProvider,
}

#[derive(Clone, Debug)]
pub(crate) struct User {
    pub id: u64,
    pub kind: UserKind,
    pub display_name: String,
    pub created: SystemTime,
    pub accounts: Vec<u64>,
    pub oauth_client: Option<u64>,
}

/// Which kind of monetary account: the object name bunq wraps it in, in the generic
/// `GET /user/{id}/monetary-account` list and elsewhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AccountKind {
    /// `MonetaryAccountBank`, the current account (also under `monetary-account-bank`).
    Bank,
    /// `MonetaryAccountSavings`, with a savings goal.
    Savings,
    /// `MonetaryAccountJoint`, shared with a co-owner.
    Joint,
    /// `MonetaryAccountExternal`, another bank's account connected to bunq.
    External,
}

impl AccountKind {
    /// bunq's object name for this kind.
    pub fn type_name(self) -> &'static str {
        match self {
            Self::Bank => "MonetaryAccountBank",
            Self::Savings => "MonetaryAccountSavings",
            Self::Joint => "MonetaryAccountJoint",
            Self::External => "MonetaryAccountExternal",
        }
    }

    /// The kind named `name`: bunq's object name or its short form (`savings`).
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Bank, Self::Savings, Self::Joint, Self::External]
            .into_iter()
            .find(|k| {
                name == k.type_name()
                    || k.type_name()
                        .strip_prefix("MonetaryAccount")
                        .is_some_and(|short| name.eq_ignore_ascii_case(short))
            })
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Account {
    pub id: u64,
    pub user_id: u64,
    pub kind: AccountKind,
    pub description: String,
    pub balance_cents: i64,
    pub iban: String,
    /// `ACTIVE`, `BLOCKED`, `CANCELLED`, `PENDING_REOPEN`.
    pub status: String,
    pub created: SystemTime,
}

/// An OAuth grant: `granted_by` let `requested_by` (the OAuth client's owner) act for it.
/// `id` is the `UserApiKey` id that sessions made with the access token act as.
#[derive(Clone, Debug)]
pub(crate) struct Grant {
    pub id: u64,
    pub granted_by: u64,
    pub requested_by: u64,
    pub created: SystemTime,
    /// Withdrawn by the granting user: its access token no longer opens anything.
    pub revoked: bool,
}

pub(crate) struct Installation {
    pub client_key: PublicKey,
    /// `client_public_key` exactly as sent: a PSD2 provider's certificate key signs it.
    pub client_key_pem: String,
    /// Set by device-server.
    pub device: Option<Device>,
    /// Every `X-Bunq-Client-Request-Id` of a session-authenticated non-GET call that
    /// reached its handler on this installation (bunq refuses such an id a second time
    /// "on the same DeviceServer"; one device per installation here). GETs are left
    /// out: nothing executes, and it keeps the memory of a fake under a GET benchmark
    /// bounded.
    pub used_request_ids: HashSet<String>,
}

/// A device registered with device-server.
pub(crate) struct Device {
    /// The `secret` it was registered with: an API key or an OAuth access token.
    pub secret: String,
    pub permitted: PermittedIps,
}

/// Where a device may call from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PermittedIps {
    /// `"*"` was in `permitted_ips`.
    Any,
    /// The listed IPs, or the IP that called device-server when the list was empty.
    Only(Vec<IpAddr>),
}

impl PermittedIps {
    /// bunq's rules: an empty (or absent) list binds to the calling IP, `"*"` anywhere in
    /// it allows any, otherwise exactly the listed IPv4 addresses. `Err` names the first
    /// entry that is neither.
    pub fn from_request(list: &[String], caller: IpAddr) -> Result<Self, String> {
        if list.is_empty() {
            return Ok(Self::Only(vec![caller]));
        }
        if list.iter().any(|ip| ip.trim() == "*") {
            return Ok(Self::Any);
        }
        list.iter()
            .map(|ip| {
                ip.trim()
                    .parse::<Ipv4Addr>()
                    .map(IpAddr::V4)
                    .map_err(|_| ip.clone())
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self::Only)
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        match self {
            Self::Any => true,
            Self::Only(ips) => ips.contains(&ip),
        }
    }
}

/// Who a session acts as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Subject {
    /// An API-key session of this user.
    Person(u64),
    /// An OAuth session: the `UserApiKey` id.
    ApiKey(u64),
}

pub(crate) struct SessionRec {
    pub installation_token: String,
    pub subject: Subject,
    pub expires_at: Instant,
}

#[derive(Clone, Debug)]
pub(crate) struct CallbackUrl {
    pub id: u64,
    pub url: String,
    pub created: SystemTime,
}

#[derive(Clone, Debug)]
pub(crate) struct OauthClient {
    pub id: u64,
    pub user_id: u64,
    pub status: String,
    pub display_name: String,
    pub client_id: String,
    pub secret: String,
    pub callback_urls: Vec<CallbackUrl>,
    pub created: SystemTime,
}

pub(crate) struct Code {
    pub client_id: String,
    pub redirect_uri: String,
    pub user_id: u64,
    pub state: Option<String>,
    pub expires_at: Instant,
}

#[derive(Clone, Debug)]
pub(crate) struct Payment {
    pub id: u64,
    pub account_id: u64,
    pub amount_cents: i64,
    /// The counterparty as the request named it: a Pointer (`type`, `value`, `name`).
    pub counterparty: Value,
    pub description: String,
    pub created: SystemTime,
}

/// A request for money (`RequestInquiry`) made from an account.
#[derive(Clone, Debug)]
pub(crate) struct RequestInquiry {
    pub id: u64,
    pub account_id: u64,
    pub amount_cents: i64,
    /// The Pointer the request was sent to.
    pub counterparty: Value,
    pub description: String,
    /// `PENDING`, or `ACCEPTED` at once for the sandbox's sugar daddy.
    pub status: &'static str,
    pub created: SystemTime,
}

/// A payment proposed for the account holder to accept in the bunq app (`DraftPayment`).
#[derive(Clone, Debug)]
pub(crate) struct DraftPayment {
    pub id: u64,
    pub account_id: u64,
    /// `(amount in cents, counterparty Pointer, description)` per entry.
    pub entries: Vec<(i64, Value, String)>,
    /// `PENDING` until the holder answers (which the fake never does).
    pub status: &'static str,
    pub created: SystemTime,
}

/// The whole fake bank.
#[derive(Default)]
pub(crate) struct World {
    next_id: u64,
    pub users: HashMap<u64, User>,
    pub accounts: HashMap<u64, Account>,
    /// API key (or a PSD2 credential's `token_value`) → user id.
    pub api_keys: HashMap<String, u64>,
    /// A PSD2 certificate's SHA-256 fingerprint → its provider's user id.
    pub psd2_providers: HashMap<String, u64>,
    /// OAuth access token → grant id.
    pub access_tokens: HashMap<String, u64>,
    pub grants: HashMap<u64, Grant>,
    /// Installation token → installation.
    pub installations: HashMap<String, Installation>,
    /// Session token → session.
    pub sessions: HashMap<String, SessionRec>,
    /// Every session token issued, in order, ended ones included (`sessions` forgets
    /// them): the `/_fake/secrets` list. 64 bytes a session; a fake's life is short.
    pub issued_session_tokens: Vec<String>,
    pub oauth_clients: HashMap<u64, OauthClient>,
    pub codes: HashMap<String, Code>,
    pub payments: Vec<Payment>,
    pub request_inquiries: Vec<RequestInquiry>,
    pub draft_payments: Vec<DraftPayment>,
    /// The receiving side of payments between fake accounts and sandbox top-ups: kept so
    /// that `GET .../payment/{id}` finds them, not counted as payments made.
    pub received: Vec<Payment>,
    /// The owner of the fake-internal OAuth client behind `grant_oauth_access`.
    pub internal_psp: Option<u64>,
    /// Notification filters by (path user id, account id or None for user level).
    pub notification_filters: HashMap<(u64, Option<u64>), crate::notify::FilterSet>,
}

/// A fresh random token: 32 random bytes as 64 lowercase hex digits, like bunq's.
pub(crate) fn random_token() -> String {
    let bytes: [u8; 32] = rand::thread_rng().r#gen();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl World {
    pub fn new() -> Self {
        Self {
            // bunq ids are large; starting high keeps them from looking like indexes.
            next_id: 1_000_000,
            ..Self::default()
        }
    }

    pub fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Records `request_id` as used on `installation`; false when it already was (the
    /// call must then be refused without executing). An unknown installation has no
    /// memory to check, so it is let through.
    pub fn remember_request_id(&mut self, installation: &str, request_id: &str) -> bool {
        match self.installations.get_mut(installation) {
            Some(i) => i.used_request_ids.insert(request_id.to_owned()),
            None => true,
        }
    }

    /// The grant behind an OAuth access token, unless it was revoked.
    pub fn live_grant(&self, access_token: &str) -> Option<u64> {
        self.access_tokens
            .get(access_token)
            .copied()
            .filter(|g| self.grants.get(g).is_some_and(|g| !g.revoked))
    }

    /// Whether `secret` (API key or OAuth access token) still opens devices and sessions.
    pub fn credential_valid(&self, secret: &str) -> bool {
        self.api_keys.contains_key(secret) || self.live_grant(secret).is_some()
    }

    /// Revokes every live grant of `granted_by` and ends the sessions opened with them;
    /// returns how many grants (one access token each) it revoked.
    pub fn revoke_grants(&mut self, granted_by: u64) -> HashSet<u64> {
        let mut revoked = HashSet::new();
        for grant in self.grants.values_mut() {
            if grant.granted_by == granted_by && !grant.revoked {
                grant.revoked = true;
                revoked.insert(grant.id);
            }
        }
        self.sessions
            .retain(|_, s| !matches!(s.subject, Subject::ApiKey(g) if revoked.contains(&g)));
        revoked
    }

    /// A sandbox `UserPerson` with an API key and two EUR bank accounts at 0.00.
    pub fn create_sandbox_user(&mut self) -> (u64, String, Vec<u64>) {
        let id = self.next_id();
        self.users.insert(
            id,
            User {
                id,
                kind: UserKind::Person,
                display_name: format!("Sandbox User {id}"),
                created: SystemTime::now(),
                accounts: Vec::new(),
                oauth_client: None,
            },
        );
        let accounts = ["Main account", "Savings"]
            .into_iter()
            .filter_map(|description| self.create_account(id, AccountKind::Bank, description))
            .collect();
        let api_key = format!("sandbox_{}", random_token());
        self.api_keys.insert(api_key.clone(), id);
        (id, api_key, accounts)
    }

    /// A new active EUR account of `kind` at 0.00 for `user_id`; `None` for an unknown
    /// user.
    pub fn create_account(
        &mut self,
        user_id: u64,
        kind: AccountKind,
        description: &str,
    ) -> Option<u64> {
        if !self.users.contains_key(&user_id) {
            return None;
        }
        let aid = self.next_id();
        self.accounts.insert(
            aid,
            Account {
                id: aid,
                user_id,
                kind,
                description: description.to_owned(),
                balance_cents: 0,
                iban: iban_for(aid),
                status: "ACTIVE".to_owned(),
                created: SystemTime::now(),
            },
        );
        if let Some(user) = self.users.get_mut(&user_id) {
            user.accounts.push(aid);
        }
        Some(aid)
    }

    /// Records that `granted_by` approved `requested_by`'s OAuth client; returns the
    /// access token.
    pub fn create_grant(&mut self, granted_by: u64, requested_by: u64) -> String {
        let id = self.next_id();
        self.grants.insert(
            id,
            Grant {
                id,
                granted_by,
                requested_by,
                created: SystemTime::now(),
                revoked: false,
            },
        );
        let token = random_token();
        self.access_tokens.insert(token.clone(), id);
        token
    }

    /// The owner of the internal OAuth client, created on first use.
    pub fn internal_psp(&mut self) -> u64 {
        if let Some(id) = self.internal_psp {
            return id;
        }
        let id = self.next_id();
        self.users.insert(
            id,
            User {
                id,
                kind: UserKind::PaymentServiceProvider,
                display_name: "bunq-fake OAuth app".to_owned(),
                created: SystemTime::now(),
                accounts: Vec::new(),
                oauth_client: None,
            },
        );
        self.internal_psp = Some(id);
        id
    }

    /// The user whose accounts a session acts on.
    pub fn owner_of(&self, subject: Subject) -> Option<u64> {
        match subject {
            Subject::Person(id) => Some(id),
            Subject::ApiKey(gid) => self.grants.get(&gid).map(|g| g.granted_by),
        }
    }
}

/// A Dutch bunq IBAN (`NLkkBUNQ` + 10 digits) with valid ISO 13616 check digits, so
/// clients that validate IBANs accept it.
pub(crate) fn iban_for(account_id: u64) -> String {
    let bban = format!("BUNQ{:010}", account_id % 10_000_000_000);
    // Move the country code and "00" to the end, letters as 10..35, then mod 97.
    let rearranged = format!("{bban}NL00");
    let mut remainder: u32 = 0;
    for c in rearranged.chars() {
        let value = c.to_digit(36).unwrap_or_default();
        let digits = if value >= 10 { 100 } else { 10 };
        remainder = (remainder * digits + value) % 97;
    }
    format!("NL{:02}{bban}", 98 - remainder)
}

/// `12345` → `"123.45"`, `-5` → `"-0.05"`.
pub(crate) fn format_cents(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

/// Parses a positive amount such as `"500"`, `"12.5"` or `"0.01"` into cents.
pub(crate) fn parse_amount(value: &str) -> Option<i64> {
    let (whole, frac) = match value.split_once('.') {
        Some((w, f)) => (w, f),
        None => (value, ""),
    };
    if whole.is_empty()
        || whole.len() > 12
        || frac.len() > 2
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let whole: i64 = whole.parse().ok()?;
    let frac: i64 = match frac.len() {
        0 => 0,
        1 => frac.parse::<i64>().ok()? * 10,
        _ => frac.parse().ok()?,
    };
    let cents = whole.checked_mul(100)?.checked_add(frac)?;
    (cents > 0).then_some(cents)
}

/// bunq's timestamp format, UTC: `2025-03-05 16:12:11.918100`.
pub(crate) fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02} {:02}:{:02}:{:02}.{:06}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn permitted_ips_follow_bunqs_rules() {
        let caller = IpAddr::from([127, 0, 0, 1]);
        let other = IpAddr::from([127, 0, 0, 2]);
        let empty = PermittedIps::from_request(&[], caller).unwrap();
        assert!(empty.allows(caller) && !empty.allows(other));
        let list = vec!["127.0.0.2".to_owned()];
        let listed = PermittedIps::from_request(&list, caller).unwrap();
        assert!(listed.allows(other) && !listed.allows(caller));
        let star = vec!["127.0.0.2".to_owned(), "*".to_owned()];
        assert_eq!(
            PermittedIps::from_request(&star, caller),
            Ok(PermittedIps::Any)
        );
        let bad = vec!["::1".to_owned()];
        assert_eq!(
            PermittedIps::from_request(&bad, caller),
            Err("::1".to_owned())
        );
    }

    #[test]
    fn amounts_parse_and_format_like_bunq() {
        assert_eq!(parse_amount("500"), Some(50_000));
        assert_eq!(parse_amount("12.5"), Some(1_250));
        assert_eq!(parse_amount("0.01"), Some(1));
        for bad in ["", "-1", "0", "0.00", "1.234", "1e3", "abc", ".5"] {
            assert_eq!(parse_amount(bad), None, "{bad}");
        }
        assert_eq!(format_cents(50_000), "500.00");
        assert_eq!(format_cents(-5), "-0.05");
    }

    #[test]
    fn ibans_have_valid_check_digits() {
        let iban = iban_for(1_000_002);
        assert!(iban.starts_with("NL") && iban.contains("BUNQ"), "{iban}");
        // Full ISO 13616 check: rearranged number mod 97 == 1.
        let rearranged = format!("{}{}", &iban[4..], &iban[..4]);
        let mut r = 0u32;
        for c in rearranged.chars() {
            let v = c.to_digit(36).unwrap();
            r = (r * if v >= 10 { 100 } else { 10 } + v) % 97;
        }
        assert_eq!(r, 1, "{iban}");
    }

    #[test]
    fn timestamps_use_bunqs_format() {
        let t = UNIX_EPOCH + Duration::from_micros(1_741_191_131_918_100);
        assert_eq!(timestamp(t), "2025-03-05 16:12:11.918100");
    }
}
