//! Cairn's registry API from Rust: a session, a unique name found or
//! claimed in one call (the `:via` / already-started pattern), a lock whose
//! fencing token guards a write, and an election.
//!
//! ```sh
//! cargo run --release -- serve &                  # a Cairn member on 127.0.0.1:2379
//! cargo run -p cairn-client --example registry [ENDPOINT]
//! ```

use cairn_client::registry::{Mode, Registered, Session};
use cairn_client::{Client, ClientOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:2379".into());
    let client = Client::connect(vec![endpoint], ClientOptions::default()).await?;

    // The session owns everything below; it is renewed in the background.
    let session = Session::create(&client, 10).await?;
    println!("session {:x}", session.id());

    client.create_registry("workers", Mode::Unique).await?;
    match client
        .register_or_get(session.id(), "workers", "user_123", "this process")
        .await?
    {
        Registered::Registered { .. } => println!("started user_123 here"),
        Registered::Existing(entries) => {
            println!("user_123 runs in session {:x}", entries[0].owner)
        }
        Registered::AlreadyRegistered { owner, .. } => println!("owned by {owner:x}"),
    }

    // A lock, and a write guarded by its fencing token: a holder that was
    // paused past its TTL would be refused here once a newer holder wrote.
    let lock = client.lock("report", session.id()).await?;
    let written = client
        .fenced_put(
            "report/fence",
            lock.fencing_token(),
            "report/owner",
            "this process",
        )
        .await?;
    println!("lock token {} written: {written}", lock.fencing_token());
    lock.unlock().await?;

    let token = client
        .campaign("primary", session.id(), "this process")
        .await?;
    println!("leading 'primary' with token {token}");
    if let Some(leader) = client.election_leader("primary").await? {
        println!("leader is session {:x}", leader.session);
    }

    tokio::select! {
        why = session.lost() => println!("session lost: {why}"),
        _ = tokio::signal::ctrl_c() => println!("closing"),
    }
    // Closing removes the name, the candidacy and any lock place at once.
    if !session.is_lost() {
        session.close().await?;
    }
    Ok(())
}
