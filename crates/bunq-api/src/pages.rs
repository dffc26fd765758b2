//! bunq's lists as streams: newest first, one page per call, the next (older) page at
//! the `Pagination.older_url` bunq gives with each.

use bunq_session::envelope::{Page, relative_link};
use bunq_session::{ApiRequest, ContextStore, Error};
use futures::stream::{self, BoxStream, StreamExt as _, TryStreamExt as _};

use crate::{UserApi, ValueError};

/// How many items each call asks for (`?count=`): 1 to 200, bunq's largest page.
///
/// The default is 200: bunq allows 3 GETs per 3 s per endpoint, so fewer, larger pages
/// reach the end of a list sooner. A smaller size suits a caller that reads only the
/// newest few.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PageSize(u32);

impl PageSize {
    /// bunq's largest page: 200.
    pub const MAX: PageSize = PageSize(200);

    /// `count` items per page, if bunq takes it (1 to 200).
    pub fn new(count: u32) -> Result<Self, ValueError> {
        if (1..=Self::MAX.0).contains(&count) {
            Ok(Self(count))
        } else {
            Err(ValueError::PageSize(count))
        }
    }

    /// The number of items per page.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for PageSize {
    fn default() -> Self {
        Self::MAX
    }
}

/// The items of a bunq list, newest first, fetched a page at a time as the stream is
/// read: nothing is fetched before the first poll, and a caller that stops reading
/// (`take`, `try_next` then drop) fetches no further page. A failed page ends the stream
/// with its error.
pub type Pages<T> = BoxStream<'static, Result<T, Error>>;

/// Reads one page of a list answer: its items and its `Pagination`.
pub(crate) type Decode<T> = fn(&[u8]) -> Result<Page<T>, Error>;

/// Where the next page is.
enum Next {
    /// The first page: a path under `user/{id}/`, with its query.
    First(String),
    /// A later page: bunq's `older_url`, relative to the API base.
    Older(String),
    /// An `older_url` outside the API base, given with the page at this path: an error
    /// once that page's items are read.
    Outside(String),
}

/// The items of the list at `user/{id}/{tail}`, `size` per page.
pub(crate) fn pages<S: ContextStore, T: Send + 'static>(
    api: UserApi<S>,
    tail: String,
    size: PageSize,
    decode: Decode<T>,
) -> Pages<T> {
    let first = Next::First(format!("{tail}?count={}", size.get()));
    stream::try_unfold((api, Some(first)), move |(api, next)| async move {
        let Some(next) = next else {
            return Ok(None);
        };
        let path = match next {
            Next::First(tail) => format!("user/{}/{tail}", api.user_id(None).await?),
            Next::Older(path) => path,
            // A link elsewhere would carry our session token to another host.
            Next::Outside(path) => {
                return Err(Error::UnexpectedResponse {
                    context: format!("GET {}", path.split('?').next().unwrap_or("")),
                    detail: "Pagination.older_url leads outside the API base".to_owned(),
                });
            }
        };
        let answer = api
            .manager()
            .request(api.credential(), ApiRequest::get(path.as_str()))
            .await?
            .into_result()?;
        let page = decode(&answer.body)?;
        let older = page.pagination.and_then(|p| p.older_url);
        let next = match older {
            // An empty page ends the list whatever its links say.
            _ if page.items.is_empty() => None,
            None => None,
            Some(link) => match relative_link(&link, api.manager().client().api_base()) {
                // The same page again would have us loop for as long as we are read.
                Some(older) if older == path => None,
                Some(older) => Some(Next::Older(older)),
                None => Some(Next::Outside(path)),
            },
        };
        Ok(Some((page.items, (api, next))))
    })
    .map_ok(|items| stream::iter(items.into_iter().map(Ok)))
    .try_flatten()
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_is_bunqs_1_to_200() {
        assert_eq!(PageSize::new(1).map(PageSize::get), Ok(1));
        assert_eq!(PageSize::new(200), Ok(PageSize::MAX));
        assert_eq!(PageSize::new(0), Err(ValueError::PageSize(0)));
        assert_eq!(PageSize::new(201), Err(ValueError::PageSize(201)));
        assert_eq!(PageSize::default(), PageSize::MAX);
    }
}
