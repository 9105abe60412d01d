//! Pinned-key mutual TLS: a key that no manifest lists (and no configuration trusts) cannot connect; the
//! refusal is logged; a trusted key can.

mod common;

use veil_node::Identity;

#[test]
fn unknown_key_is_refused_and_logged() {
    let trusted = Identity::generate().unwrap();
    let node = common::start_node(trusted.public_key(), 5_000);
    let member = common::member(&node);

    let stranger = common::client(Identity::generate().unwrap());
    let err = stranger
        .ping(&member)
        .expect_err("a key in no manifest must not connect");
    assert!(
        err.to_string().contains("connect") || err.to_string().contains("quic"),
        "{err}"
    );
    assert!(node.rejected_handshakes() >= 1);
    let logs = common::log_text();
    assert!(
        logs.contains("rejected handshake") && logs.contains(&stranger.public_key().to_string()),
        "the refusal must be logged with the key:\n{logs}"
    );

    let friend = common::client(trusted);
    assert_eq!(friend.ping(&member).unwrap(), 0);
}

#[test]
fn client_refuses_a_server_with_another_key() {
    let trusted = Identity::generate().unwrap();
    let node = common::start_node(trusted.public_key(), 5_000);
    let mut impostor = common::member(&node);
    impostor.public_key = Identity::generate().unwrap().public_key();
    let client = common::client(trusted);
    assert!(client.ping(&impostor).is_err(), "the server key is pinned");
}
