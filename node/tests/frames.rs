//! Malformed, truncated and oversized frames close their stream with a logged error, and the node goes on
//! serving: a private inference runs on the same nodes afterwards.

mod common;

use std::sync::Arc;
use std::time::Duration;

use veil_node::client::run_private;
use veil_node::frame::VERSION;
use veil_node::peers::Peers;
use veil_node::tls::AllowList;
use veil_node::{Identity, NodeConfig};

/// Sends `bytes` on a fresh stream; `Err` if the node closed the stream (stop/reset), `Ok` with whatever it
/// answered otherwise.
async fn send_raw(conn: &quinn::Connection, bytes: &[u8], finish: bool) -> Result<Vec<u8>, String> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    send.write_all(bytes).await.map_err(|e| e.to_string())?;
    if finish {
        let _ = send.finish();
    }
    let read = tokio::time::timeout(Duration::from_secs(5), recv.read_to_end(1 << 20)).await;
    match read {
        Err(_) => Err("no reaction within 5 s".into()),
        Ok(Err(e)) => Err(format!("closed: {e}")),
        Ok(Ok(data)) => Ok(data),
    }
}

#[test]
fn bad_frames_close_their_stream_and_the_node_keeps_serving() {
    let client_id = Identity::generate().unwrap();
    let raw_id = Identity::generate().unwrap();
    let (nodes, committee) =
        common::committee(2, &[client_id.public_key(), raw_id.public_key()], 10_000);
    let target = &nodes[0];

    let rt = tokio::runtime::Runtime::new().unwrap();
    let cfg = NodeConfig::new(([127, 0, 0, 1], 0).into(), std::env::temp_dir());
    let (peers, _announced) = {
        let _g = rt.enter();
        Peers::bind(&cfg, &raw_id, Arc::new(AllowList::new([]))).unwrap()
    };
    let conn = rt
        .block_on(peers.connect(target.public_key(), target.address(), true))
        .unwrap();

    let garbage = rt.block_on(send_raw(&conn, b"\x07this is not a frame", false));
    assert!(
        garbage.is_err(),
        "wrong version must close the stream: {garbage:?}"
    );

    let mut oversized = vec![VERSION];
    oversized.extend_from_slice(&u32::MAX.to_le_bytes());
    let oversized = rt.block_on(send_raw(&conn, &oversized, false));
    assert!(
        oversized.is_err(),
        "oversized frame must close the stream: {oversized:?}"
    );

    let mut truncated = vec![VERSION];
    truncated.extend_from_slice(&100u32.to_le_bytes());
    truncated.extend_from_slice(&[0u8; 10]);
    let truncated = rt.block_on(send_raw(&conn, &truncated, true));
    assert!(
        truncated.is_err(),
        "truncated frame must close the stream: {truncated:?}"
    );

    let mut malformed = vec![VERSION];
    malformed.extend_from_slice(&3u32.to_le_bytes());
    malformed.extend_from_slice(&[0xff, 0xff, 0xff]);
    let malformed = rt.block_on(send_raw(&conn, &malformed, true));
    assert!(
        malformed.is_err(),
        "undecodable body must close the stream: {malformed:?}"
    );

    // A data stream for a job the node does not run is refused too.
    let mut hello = veil_node::frame::encode(&veil_node::wire::Msg::Hello {
        job: veil_node::wire::JobId([9; 16]),
        from: 0,
    })
    .unwrap();
    hello.extend_from_slice(&veil_node::frame::encode(&veil_node::wire::Msg::Ping).unwrap());
    rt.block_on(async {
        let mut s = conn.open_uni().await.unwrap();
        s.write_all(&hello).await.unwrap();
        let _ = s.finish();
        tokio::time::sleep(Duration::from_millis(200)).await;
    });

    let logs = common::log_text();
    for needle in [
        "unsupported frame version",
        "exceeds the limit",
        "truncated frame",
        "does not decode",
        "unknown job",
    ] {
        assert!(logs.contains(needle), "missing log of {needle:?}:\n{logs}");
    }

    // The node still serves, and a whole job runs on the same nodes afterwards.
    let (model, plan) = common::network_a();
    let client = common::client(client_id);
    assert_eq!(client.ping(&committee.parties[0]).unwrap(), 0);
    let input = veil_engine::workloads::sample_input(&model, 1, 3);
    let run = run_private(
        &client,
        &committee,
        &common::job(&model, &plan),
        std::slice::from_ref(&input),
    )
    .unwrap();
    let plain = model.forward_plain(&input, 1).unwrap();
    let err = run.report.outputs[0]
        .iter()
        .zip(&plain)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(err < 1e-3, "private and plaintext differ by {err}");
    drop(peers);
}
