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

/// `frame::read_data` (the data streams' reader, which copies a payload once) returns exactly what
/// `frame::read` returns for the same bytes: messages of every length class, other messages, and malformed,
/// truncated and oversized frames (the same error).
#[test]
fn read_data_reads_what_read_reads() {
    use veil_node::frame::{self, data_prefix, encode};
    use veil_node::wire::{Bytes, Msg};

    let a_id = Identity::generate().unwrap();
    let b_id = Identity::generate().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cfg = NodeConfig::new(([127, 0, 0, 1], 0).into(), std::env::temp_dir());
    let (a, _a_announced) = {
        let _g = rt.enter();
        Peers::bind(&cfg, &a_id, Arc::new(AllowList::new([b_id.public_key()]))).unwrap()
    };
    let (b, mut b_announced) = {
        let _g = rt.enter();
        Peers::bind(&cfg, &b_id, Arc::new(AllowList::new([a_id.public_key()]))).unwrap()
    };
    rt.spawn(b.clone().accept_loop());
    let conn = rt
        .block_on(a.connect(b_id.public_key(), b.local_addr().unwrap(), true))
        .unwrap();
    let (_, accepted) = rt.block_on(b_announced.recv()).unwrap();

    let mut cases: Vec<Vec<u8>> = Vec::new();
    for len in [0usize, 1, 127, 128, 5_000, 70_000, 1 << 20] {
        let payload: Vec<u8> = (0..len).map(|i| (i * 7 % 256) as u8).collect();
        cases.push(encode(&Msg::Data(Bytes(payload))).unwrap());
    }
    cases.push(encode(&Msg::Ping).unwrap());
    cases.push(encode(&Msg::Failed("not data".into())).unwrap());
    let data = encode(&Msg::Data(Bytes(vec![9; 300]))).unwrap();
    // Truncated inside the prefix, inside the payload, and inside the header.
    cases.push(data[..frame::HEADER_LEN + 1].to_vec());
    cases.push(data[..200].to_vec());
    cases.push(data[..3].to_vec());
    // Frames whose header announces what follows it (set below): a payload length that disagrees with the
    // body's, both ways.
    let cases_before_fixups = cases.len();
    let mut long = data_prefix(10).unwrap();
    long.extend_from_slice(&[1; 12]);
    cases.push(long);
    let mut short = data_prefix(10).unwrap();
    short.extend_from_slice(&[1; 8]);
    cases.push(short);
    // A length varint that never ends, and one beyond u64.
    let tag_end = data_prefix(0).unwrap().len() - 1;
    let mut endless = data[..tag_end].to_vec();
    endless.extend_from_slice(&[0xff; 20]);
    cases.push(endless);
    let mut huge = data[..tag_end].to_vec();
    huge.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
    cases.push(huge);
    for case in cases.iter_mut().skip(cases_before_fixups) {
        let body = case.len() as u32 - frame::HEADER_LEN as u32;
        case[1..frame::HEADER_LEN].copy_from_slice(&body.to_le_bytes());
    }
    // Over the reader's limit.
    cases.push(encode(&Msg::Data(Bytes(vec![0; 4096]))).unwrap());

    for (k, bytes) in cases.iter().enumerate() {
        let limit = if k + 1 == cases.len() { 1000 } else { 8 << 20 };
        let results = rt.block_on(async {
            let mut out = Vec::new();
            for _ in 0..2 {
                let mut send = conn.open_uni().await.unwrap();
                send.write_all(bytes).await.unwrap();
                send.finish().unwrap();
                out.push(accepted.accept_uni().await.unwrap());
            }
            let mut plain = out.remove(0);
            let mut data = out.remove(0);
            let a = frame::read(&mut plain, limit).await;
            let b = frame::read_data(&mut data, limit).await;
            (a.map_err(|e| e.to_string()), b.map_err(|e| e.to_string()))
        });
        assert_eq!(results.0, results.1, "case {k}");
    }
}
