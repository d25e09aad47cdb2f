//! A block-storing worker using Cairn's claims: ask which blocks to store,
//! store only the granted ones, register them through the batcher, then
//! find the longest stored prefix of a chain. Configured from the
//! environment (`CAIRN_CLAIMS_*`, or an existing deployment's
//! `DYN_REGISTRY_*`).
//!
//! ```sh
//! cargo run --release -- serve &                  # a Cairn member on 127.0.0.1:2379
//! CAIRN_CLAIMS_NAMESPACE=blocks CAIRN_CLAIMS_CAPACITY=100000 \
//!   cargo run -p cairn-client --example claims
//! ```

use cairn_client::claims::{ClaimKey, ClaimsClient, ClaimsConfig, OffloadStatus, RegisterEntry};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let claims = ClaimsClient::connect(ClaimsConfig::from_env()?).await?;
    println!(
        "session {:x}, namespace {}",
        claims.session_id(),
        claims.namespace()
    );

    // A chain of blocks, each hash naming its content.
    let chain: Vec<ClaimKey> = (0..8u64).map(|i| ClaimKey::U64(0xb10c_0000 + i)).collect();
    // An error here means the cluster could not answer: store nothing
    // rather than guess.
    let offload = claims.can_offload(&chain).await?;
    let batcher = claims.batcher();
    let mut parent = None;
    for (key, status) in chain.iter().zip(&offload.statuses) {
        match status {
            OffloadStatus::Granted => {
                // ... upload the block here, within offload.lease_ttl ...
                let mut entry = RegisterEntry::new(key.clone(), format!("s3://blocks/{key}"));
                entry.parent = parent.clone();
                batcher.register(vec![entry]).await?;
                println!("{key} stored by us");
            }
            OffloadStatus::AlreadyStored => println!("{key} already stored"),
            OffloadStatus::Leased => println!("{key} being stored by another worker"),
        }
        parent = Some(key.clone());
    }
    let report = batcher.close().await?;
    println!(
        "registered {} ({} already there)",
        report.stored, report.already_stored
    );

    let prefix = claims.match_prefix(&chain).await?;
    println!(
        "{} of {} blocks of the chain are stored in order",
        prefix.len(),
        chain.len()
    );
    claims.close().await?;
    Ok(())
}
