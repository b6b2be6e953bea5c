//! The room's side of chat and the E2EE key relay: hands client messages
//! to [`Chat`](crate::core::chat::Chat) and writes what it returns to the
//! recipients' control channels. Texts are never logged.

use std::time::Instant;

use super::{Room, send_control};
use crate::core::chat::{self, Post, Recipients};
use crate::core::control::ClientMessage;

impl Room {
    /// A `chat` or `key` message from the participant in slab slot `i`.
    pub(super) fn on_chat(&mut self, i: usize, msg: ClientMessage, now: Instant) {
        let Some(sender) = self.slab[i].as_ref() else {
            return;
        };
        let (from, name) = (sender.id, sender.name.clone());
        let index = &self.index;
        let present = |p| index.contains_key(&p);
        let (result, local_id) = match &msg {
            ClientMessage::Chat {
                text,
                to,
                encrypted,
                local_id,
            } => {
                let post = Post {
                    text,
                    to: to.as_deref(),
                    encrypted: *encrypted,
                    local_id: local_id.as_deref(),
                };
                (
                    self.chat.post(from, &name, post, present, now),
                    local_id.as_deref(),
                )
            }
            ClientMessage::Key { to, data } => (
                self.chat.relay_key(from, to.as_deref(), data, present, now),
                None,
            ),
            _ => return,
        };
        let delivery = match result {
            Ok(d) => d,
            Err(e) => {
                let refusal = chat::error_message(&e, local_id);
                if let Some(p) = self.slab[i].as_mut() {
                    send_control(p, &refusal);
                }
                return;
            }
        };
        let mut sent = 0usize;
        for (k, p) in self.slab.iter_mut().enumerate() {
            let Some(p) = p.as_mut() else { continue };
            let wanted = match delivery.to {
                Recipients::All => true,
                Recipients::Others => k != i,
                Recipients::One(to) => k == i || p.id == to,
                Recipients::Only(to) => p.id == to,
            };
            if wanted {
                send_control(p, &delivery.message);
                sent += 1;
            }
        }
        tracing::trace!(participant = %from, recipients = sent, "chat relayed");
    }

    /// Replay the kept chat history to a participant whose control channel
    /// just opened (after its `welcome`).
    pub(super) fn send_chat_history(&mut self, i: usize) {
        let Some(p) = self.slab[i].as_mut() else {
            return;
        };
        for m in self.chat.history() {
            send_control(p, m);
        }
    }
}
