//! The frames of the `ForwardStream` RPC: a follower's forwarded requests
//! and the leader's replies, multiplexed on one stream by request id.
//!
//! The id goes **after** the payload, so taking it off is a truncation,
//! not a copy of the payload (see the RPC's comment in `raft.proto`).

use tonic::{Code, Status};

const ID_BYTES: usize = 8;

/// A request frame: `payload | id`.
pub fn request(mut payload: Vec<u8>, id: u64) -> Vec<u8> {
    payload.extend_from_slice(&id.to_le_bytes());
    payload
}

/// The id and payload of a request frame; `None` if it is shorter than an id.
pub fn split_request(mut frame: Vec<u8>) -> Option<(u64, Vec<u8>)> {
    let id = take_id(&mut frame)?;
    Some((id, frame))
}

/// A reply frame: `payload | 0 | id`, or `message | code | id` for an error.
pub fn reply(id: u64, answer: Result<Vec<u8>, Status>) -> Vec<u8> {
    let mut frame = match answer {
        Ok(mut payload) => {
            payload.push(0);
            payload
        }
        Err(status) => {
            let mut message = status.message().as_bytes().to_vec();
            // `Ok` is 0 and marks an answer, so an error never carries it.
            message.push(match status.code() {
                Code::Ok => Code::Unknown as u8,
                code => code as u8,
            });
            message
        }
    };
    frame.extend_from_slice(&id.to_le_bytes());
    frame
}

/// The id and answer of a reply frame; `None` if it is too short to be one.
pub fn split_reply(mut frame: Vec<u8>) -> Option<(u64, Result<Vec<u8>, Status>)> {
    let id = take_id(&mut frame)?;
    let code = frame.pop()?;
    if code == 0 {
        return Some((id, Ok(frame)));
    }
    let message = String::from_utf8_lossy(&frame).into_owned();
    Some((id, Err(Status::new(Code::from(i32::from(code)), message))))
}

fn take_id(frame: &mut Vec<u8>) -> Option<u64> {
    let at = frame.len().checked_sub(ID_BYTES)?;
    let id = u64::from_le_bytes(frame[at..].try_into().ok()?);
    frame.truncate(at);
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_come_apart_as_they_were_put_together() {
        let (id, payload) = split_request(request(b"batch".to_vec(), 7)).unwrap();
        assert_eq!((id, payload.as_slice()), (7, &b"batch"[..]));
        let (id, empty) = split_request(request(Vec::new(), u64::MAX)).unwrap();
        assert_eq!((id, empty.len()), (u64::MAX, 0));

        let (id, answer) = split_reply(reply(9, Ok(b"answer".to_vec()))).unwrap();
        assert_eq!((id, answer.unwrap()), (9, b"answer".to_vec()));
        let (id, answer) = split_reply(reply(3, Ok(Vec::new()))).unwrap();
        assert_eq!((id, answer.unwrap().len()), (3, 0));

        let (id, answer) =
            split_reply(reply(4, Err(Status::invalid_argument("bad batch")))).unwrap();
        let status = answer.unwrap_err();
        assert_eq!(id, 4);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "bad batch");
    }

    #[test]
    fn frames_too_short_to_hold_an_id_are_refused() {
        assert!(split_request(vec![1, 2, 3]).is_none());
        assert!(
            split_reply(vec![0; 8]).is_none(),
            "an id but no status byte"
        );
        assert!(split_reply(Vec::new()).is_none());
    }
}
