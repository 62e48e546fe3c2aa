//! Parse: a command text becomes a command to authorize, or an answer to a held request.

use super::{Bot, Origin};
use crate::chat::Chat;
use crate::command::{self, Request};

impl<C: Chat> Bot<C> {
    /// `body` as a request, or `None` once a text that is neither has been refused.
    pub(super) async fn parse(&self, origin: &Origin<'_>, body: &str) -> Option<Request> {
        match command::parse_request(body, &self.s.grammar) {
            Ok(request) => Some(request),
            Err(e) => {
                self.refuse(origin, body, None, e).await;
                None
            }
        }
    }
}
