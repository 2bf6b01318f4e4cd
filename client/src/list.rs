//! The shape shared by every list call: a builder with filters, a page size,
//! and three ways to run it (one page, every item as a stream, every item
//! collected).

/// Defines a list builder `$name` over `$request`, whose response lists
/// `$item`s in `$field`, answered by `$service::$method`.
macro_rules! list_call {
    (
        $(#[$doc:meta])*
        $name:ident($request:ty) -> $item:ty, $field:ident, $service:ident::$method:ident
    ) => {
        $(#[$doc])*
        ///
        /// Run it with [`send`](Self::send) for one page,
        /// [`stream`](Self::stream) for every item page by page, or
        /// [`collect_all`](Self::collect_all). Retried on `UNAVAILABLE`.
        #[derive(Debug, Clone)]
        #[must_use = "a list builder does nothing until `.send()`, `.stream()` or `.collect_all()`"]
        pub struct $name {
            client: $crate::Herald,
            request: $request,
        }

        impl $name {
            pub(crate) fn new(client: $crate::Herald, request: $request) -> $name {
                $name { client, request }
            }

            /// Items per page: 1 to 1000; the server's default (50) when unset.
            pub fn page_size(mut self, page_size: i32) -> $name {
                self.request.page_size = page_size;
                self
            }

            /// Starts at the page this token (a previous page's
            /// `next_page_token`) names.
            pub fn page_token(mut self, page_token: impl Into<String>) -> $name {
                self.request.page_token = page_token.into();
                self
            }

            /// Fetches one page.
            pub async fn send(self) -> $crate::Result<$crate::Page<$item>> {
                Self::fetch(self.client, self.request).await
            }

            /// Every item, fetching pages as the stream is read. An error is
            /// yielded once and ends the stream.
            pub fn stream(
                self,
            ) -> impl futures_util::Stream<Item = $crate::Result<$item>> + Send + 'static {
                let first = self.request.page_token.clone();
                $crate::client::paginate(first, move |token| {
                    let client = self.client.clone();
                    let mut request = self.request.clone();
                    request.page_token = token;
                    Self::fetch(client, request)
                })
            }

            /// Every item, all pages read into one `Vec`.
            pub async fn collect_all(self) -> $crate::Result<Vec<$item>> {
                use futures_util::StreamExt as _;
                let mut items = Vec::new();
                let mut stream = std::pin::pin!(self.stream());
                while let Some(item) = stream.next().await {
                    items.push(item?);
                }
                Ok(items)
            }

            async fn fetch(
                client: $crate::Herald,
                request: $request,
            ) -> $crate::Result<$crate::Page<$item>> {
                let response = client
                    .unary(true, request, |channel, request| async move {
                        $service::new(channel).$method(request).await
                    })
                    .await?;
                Ok($crate::Page::new(response.$field, response.next_page_token))
            }
        }
    };
}
