//! Where a store lives, named by one string: a SQLite file path, or a PostgreSQL URL
//! (`postgres://` or `postgresql://`). A URL may carry a password: [`PostgresUrl`]
//! keeps it out of `Debug`, `Display` and errors.

use std::fmt;
use std::path::PathBuf;

use secrecy::{ExposeSecret as _, SecretString};

use crate::StoreError;

/// A SQLite file or a PostgreSQL server.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum StoreLocation {
    /// A SQLite file (created on first open).
    Sqlite(PathBuf),
    /// A PostgreSQL database (opened with the `postgres` feature).
    Postgres(PostgresUrl),
}

impl StoreLocation {
    /// A URL starting with `postgres://` or `postgresql://` names a PostgreSQL
    /// database (checked here, without connecting); anything else is a file path.
    pub fn parse(text: &str) -> Result<Self, StoreError> {
        if PostgresUrl::is_postgres(text) {
            Ok(StoreLocation::Postgres(PostgresUrl::parse(text)?))
        } else if text.trim().is_empty() {
            Err(StoreError::InvalidInput(
                "an empty database location".to_owned(),
            ))
        } else {
            Ok(StoreLocation::Sqlite(PathBuf::from(text)))
        }
    }
}

/// Shows the path, or the URL without its password.
impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreLocation::Sqlite(path) => write!(f, "{}", path.display()),
            StoreLocation::Postgres(url) => write!(f, "{url}"),
        }
    }
}

/// A PostgreSQL connection URL, e.g. `postgres://gateway:pw@db.internal:5432/gateway`.
/// Its password (in the user info or as a `password=` parameter) is a secret: `Debug`
/// and `Display` show `***` in its place.
#[derive(Clone)]
pub struct PostgresUrl {
    url: SecretString,
    shown: String,
}

impl PostgresUrl {
    /// Whether `text` is written as a PostgreSQL URL.
    pub fn is_postgres(text: &str) -> bool {
        let text = text.trim_start();
        ["postgres://", "postgresql://"].iter().any(|scheme| {
            text.get(..scheme.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(scheme))
        })
    }

    /// Checks `text` (a `postgres://` or `postgresql://` URL) without connecting. The
    /// error names what is wrong, never the URL.
    pub fn parse(text: &str) -> Result<Self, StoreError> {
        let text = text.trim();
        let Some((scheme, rest)) = text.split_once("://").filter(|_| Self::is_postgres(text))
        else {
            return Err(StoreError::InvalidInput(
                "a PostgreSQL URL starts with postgres:// or postgresql://".to_owned(),
            ));
        };
        // Schemes are case-insensitive; the driver reads only the lower-case ones.
        let text = &format!("{}://{rest}", scheme.to_ascii_lowercase());
        #[cfg(feature = "postgres")]
        text.parse::<tokio_postgres::Config>()
            .map_err(|e| StoreError::InvalidInput(format!("not a valid PostgreSQL URL: {e}")))?;
        Ok(Self {
            shown: redact(text),
            url: SecretString::from(text.to_owned()),
        })
    }

    /// The URL, password included: for the driver only.
    pub fn expose(&self) -> &str {
        self.url.expose_secret()
    }
}

impl fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PostgresUrl({:?})", self.shown)
    }
}

impl fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

/// The URL with `***` for the password of its user info and for the value of any
/// `password` parameter.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".to_owned();
    };
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match before_query.find('/') {
        Some(i) => before_query.split_at(i),
        None => (before_query, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => format!("{user_info}@{host}"),
        },
        None => authority.to_owned(),
    };
    let mut out = format!("{scheme}://{authority}{path}");
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_postgres_and_anything_else_a_path() {
        assert!(matches!(
            StoreLocation::parse("postgres://u@localhost/db").unwrap(),
            StoreLocation::Postgres(_)
        ));
        assert!(matches!(
            StoreLocation::parse("PostgreSQL://u@localhost/db").unwrap(),
            StoreLocation::Postgres(_)
        ));
        assert!(matches!(
            StoreLocation::parse("gw.sqlite3").unwrap(),
            StoreLocation::Sqlite(p) if p == std::path::Path::new("gw.sqlite3")
        ));
        assert!(StoreLocation::parse(" ").is_err());
    }

    #[test]
    fn passwords_never_show() {
        for (url, shown) in [
            (
                "postgres://gw:s3cret-pw@db:5432/gateway",
                "postgres://gw:***@db:5432/gateway",
            ),
            (
                "postgresql://gw@db/gateway?password=s3cret-pw&sslmode=disable",
                "postgresql://gw@db/gateway?password=***&sslmode=disable",
            ),
            ("postgres://db", "postgres://db"),
        ] {
            let parsed = PostgresUrl::parse(url).unwrap();
            assert_eq!(parsed.to_string(), shown);
            let debug = format!("{parsed:?} {:?}", StoreLocation::parse(url).unwrap());
            assert!(!debug.contains("s3cret"), "{debug}");
            assert_eq!(parsed.expose(), url);
        }
        let upper = PostgresUrl::parse("PostgreSQL://u@localhost/db").unwrap();
        assert_eq!(upper.expose(), "postgresql://u@localhost/db");
        {}
    }

    #[cfg(feature = "postgres")]
    #[test]
    fn a_bad_url_is_refused_without_echoing_it() {
        let err = PostgresUrl::parse("postgres://gw:s3cret@db:notaport/x")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("s3cret"), "{err}");
    }
}
