//! Reading gRPC statuses that every Cairn caller must read the same way.

use tonic::{Code, Status};

/// Whether a call failed connecting, so the request never left and is
/// safe to send again: tonic puts a `ConnectError` behind such a status
/// (the message check covers statuses rebuilt without their source). A
/// connection that broke under a call ("error reading a body from
/// connection", a reset) is not one: the server may have acted on it.
pub fn is_connect_error(status: &Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(err) = source {
        if err.downcast_ref::<tonic::ConnectError>().is_some() {
            return true;
        }
        source = err.source();
    }
    let m = status.message();
    status.code() == Code::Unavailable
        && (m.contains("tcp connect error")
            || m.contains("error trying to connect")
            || m.contains("Connection refused"))
}
