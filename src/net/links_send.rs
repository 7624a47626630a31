//! [`Links`]' outgoing side: frames authenticated under each link's keys, tensor payloads
//! sealed and chunked, and a tensor looped back as it would arrive.

use super::*;
use crate::net::codec::{encode_frame, split_into_chunks, Onward, TensorHeader, MAX_MEMBERS, MAX_RANK, MAX_ROUTE, MAX_SHARED_NAME};
use crate::net::reassembly::{ReceivedTensor, TransferTiming};
use crate::tensor::{decode_values, encode_values, SharedTensor, Tensor, TransferDtype};

impl Links {
    /// Queues `message` for `peer`; `false` if there is no link to it (or no own id yet).
    pub(super) fn send(&mut self, peer: PeerUuid, message: &Message) -> bool {
        let (Some(own), Some(link), Some(keys)) = (self.own, self.links.get_mut(&peer), self.keys.get(&peer).and_then(PeerKeys::sending_keys)) else {
            return false;
        };
        // Sequence numbers survive a link being re-created, so the peer's replay guard keeps
        // accepting this side's frames.
        let lane = message.lane();
        let sequence = self.send_sequences.entry((peer, lane)).or_insert(lane.base());
        *sequence += 1;
        // A tensor's payload is sealed for the peer; without a session key (not trusted yet)
        // it is not sent at all.
        let sealed;
        let message = match message {
            Message::Tensor(chunk) => {
                let Some(ciphers) = &link.ciphers else { return false };
                sealed = Message::Tensor(TensorChunk { payload: ciphers.sending.seal(*sequence, &chunk.payload), ..chunk.clone() });
                &sealed
            }
            other => other,
        };
        #[allow(unused_mut)]
        let mut frame = encode_frame(keys, own, peer, *sequence, message);
        #[cfg(feature = "fault-injection")]
        if self.corrupt_next_tensor && matches!(message, Message::Tensor(_)) {
            self.corrupt_next_tensor = false;
            let middle = frame.len() / 2;
            frame[middle] ^= 0x01;
        }
        link.bytes_out += frame.len() as u64;
        self.outgoing.push(OutgoingFrame { to: peer, lane, bytes: frame });
        true
    }

    /// Encodes `value` as `dtype`, chunks it and queues the chunks for `tensor`'s peer, which
    /// must be trusted. Returns the bytes queued.
    pub fn send_tensor(&mut self, tensor: &SentTensor, value: &Tensor, dtype: TransferDtype) -> Result<u64, SendError> {
        let peer = tensor.peer;
        if self.links.get(&peer).is_none_or(|l| l.state != LinkState::Trusted) {
            return Err(SendError::NotTrusted);
        }
        let signed;
        let tensor = match self.route_ticket(tensor) {
            Some(ticket) => {
                signed = SentTensor { onward: tensor.onward.clone().map(|o| Onward { ticket: Some(Box::new(ticket)), ..o }), ..tensor.clone() };
                &signed
            }
            None => tensor,
        };
        let (header, payload) = encode_tensor(tensor, value, dtype)?;
        let before = self.links[&peer].bytes_out;
        for chunk in split_into_chunks(header, &payload) {
            if !self.send(peer, &Message::Tensor(chunk)) {
                return Err(SendError::SocketClosed);
            }
        }
        Ok(self.links[&peer].bytes_out - before)
    }

    /// The ticket this player signs for `tensor` when it starts a chain of its own request: the
    /// route from `tensor`'s peer on, valid for [`crate::net::TICKET_LIFETIME_MS`].
    fn route_ticket(&self, tensor: &SentTensor) -> Option<RouteTicket> {
        let onward = tensor.onward.as_ref().filter(|o| o.ticket.is_none() && tensor.direction == Direction::StageInput)?;
        let own = self.own.filter(|own| *own == onward.owner)?;
        let route = std::iter::once(tensor.peer).chain(onward.route.iter().copied()).collect();
        let expires_at_ms = self.credentials.unix_ms(self.last_tick) + crate::net::TICKET_LIFETIME_MS;
        self.credentials.sign_route(own, tensor.request, tensor.stage, route, expires_at_ms)
    }

    /// `tensor` as this player would receive it had it sent it to itself (a chain whose next
    /// stage is its own): encoded as `dtype` and decoded, so that its values are rounded as on
    /// the wire, without a frame.
    pub fn loop_back(&self, tensor: &SentTensor, value: &Tensor, dtype: TransferDtype) -> Result<ReceivedTensor, SendError> {
        let (header, payload) = encode_tensor(tensor, value, dtype)?;
        let data = decode_values(&payload, value.len(), dtype, header.params).expect("values decode as they were encoded");
        let tensor_back = Tensor::new(value.shape().to_vec(), data).expect("the same shape");
        Ok(ReceivedTensor {
            from: tensor.peer,
            direction: header.direction,
            shared: SharedTensor { request: header.request, stage: header.stage, tensor: tensor_back, dtype },
            header,
            // Nothing travels.
            transfer: TransferTiming { receiving: Duration::ZERO, link_rtt: Some(Duration::ZERO) },
        })
    }

    /// Fault injection for tests and demos (feature `fault-injection`): flips one bit of the
    /// next tensor frame after it has been authenticated, as a corrupting network or a
    /// tampering peer would.
    #[cfg(feature = "fault-injection")]
    pub fn corrupt_next_tensor_frame(&mut self) {
        self.corrupt_next_tensor = true;
    }
}

/// The header and payload of `value` sent as `tensor` says, encoded as `dtype`.
pub(super) fn encode_tensor(tensor: &SentTensor, value: &Tensor, dtype: TransferDtype) -> Result<(TensorHeader, Vec<u8>), SendError> {
    let route = tensor.onward.as_ref().map_or(0, |o| o.route.len());
    if value.shape().len() > MAX_RANK || value.shape().iter().any(|&d| d > u32::MAX as usize) || route > MAX_ROUTE || tensor.trace.len() > MAX_ROUTE {
        return Err(SendError::TooLarge);
    }
    let shared_name_fits = tensor.shared.as_ref().is_none_or(|key| key.name.len() <= MAX_SHARED_NAME);
    let members_fit = tensor.collective.as_ref().is_none_or(|tag| tag.members.len() <= MAX_MEMBERS);
    let keyed = matches!(tensor.direction, Direction::Shared | Direction::Collective);
    if tensor.shared.is_some() != keyed || tensor.collective.is_some() != (tensor.direction == Direction::Collective) || !shared_name_fits || !members_fit {
        return Err(SendError::InvalidSharedKey);
    }
    let (payload, params) = encode_values(value.data(), dtype);
    let total_bytes = u32::try_from(payload.len()).map_err(|_| SendError::TooLarge)?;
    let header = TensorHeader {
        request: tensor.request,
        stage: tensor.stage,
        direction: tensor.direction,
        dtype,
        shape: value.shape().iter().map(|&d| d as u32).collect(),
        params,
        total_bytes,
        onward: tensor.onward.clone(),
        trace: tensor.trace.clone(),
        shared: tensor.shared.clone(),
        collective: tensor.collective.clone(),
    };
    Ok((header, payload))
}
