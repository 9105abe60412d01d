//! Private chat through a coordinator, over real processes: `veil devnet` (a coordinator and five node
//! processes that find SmolLM2's GGUF file under `VEIL_MODELS_DIR`), `veil deploy --model
//! smollm2-135m-instruct`, then `veil chat --coordinator "What is the capital of France?" --max-tokens 12
//! --json`: one job on a committee of three parties and a dealer of distinct operators, driven by the
//! client on its own streams to the parties. It answers with Paris, with the same prompt ids and greedy
//! tokens as the in-memory private run of the same turn. Before the deployment, the turn is refused with a
//! clear error and no job. Then a turn through the library call (`veil_client::Client::chat`) whose party
//! crashes after the first token fails with every party's reason, and the job is failed on the coordinator.
//!
//! Needs the fetched model (`veil models fetch smollm2-135m-instruct`): fails under `CI=true` without it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::devnet::{exe, Devnet};
use serde_json::Value;

const MODEL: &str = "smollm2-135m-instruct";
const FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const PROMPT: &str = "What is the capital of France?";

fn models_dir() -> Option<PathBuf> {
    common::devnet::models_dir(MODEL, FILE)
}

/// The last line of a successful run's stdout, as JSON.
fn json(out: &Output, what: &str) -> Value {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("JSON line")
}

fn ids(v: &Value) -> Vec<u64> {
    v.as_array()
        .expect("ids")
        .iter()
        .map(|t| t.as_u64().expect("id"))
        .collect()
}

#[test]
fn smollm2_deployed_on_devnet_answers_through_the_coordinator_as_in_memory() {
    let Some(models) = models_dir() else { return };
    let net = Devnet::start(models.clone());
    let chat = ["chat", PROMPT, "--max-tokens", "12"];

    // Not deployed yet: refused before any job, saying so.
    let refused = net.veil(&chat);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("is not deployed"), "{stderr}");

    let deployed = json(&net.veil(&["deploy", "--model", MODEL]), "deploy");
    let id = veil_node::generation::file_id(&models.join(MODEL).join(FILE)).expect("hash");
    assert_eq!(deployed["id"], id.as_str());
    assert_eq!(deployed["deployment"]["pretrained"], MODEL);

    let network = json(&net.veil(&chat), "veil chat --coordinator");
    assert_eq!(network["mode"], "network");
    assert_eq!(network["model"], id.as_str());
    let text = network["text"].as_str().expect("text");
    assert!(text.contains("Paris"), "{network}");
    let committee = &network["committee"];
    let mut operators: Vec<&str> = committee["parties"]
        .as_array()
        .expect("parties")
        .iter()
        .map(|o| o.as_str().expect("operator"))
        .collect();
    assert_eq!(operators.len(), 3);
    operators.push(committee["dealer"].as_str().expect("dealer"));
    let mut distinct = operators.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 4, "one operator per member: {committee}");
    let bytes = network["bytes_per_party"].as_array().expect("bytes");
    assert_eq!(bytes.len(), 3);
    assert!(bytes.iter().all(|b| b.as_u64().expect("bytes") > 0));
    assert!(network["ms_per_token"].as_f64().expect("ms") > 0.0);

    // The same turn in memory (three parties, semi2k): the same prompt ids and greedy tokens.
    let local = Command::new(exe())
        .args(["chat", PROMPT, "--max-tokens", "12", "--json"])
        .env(veil_engine::bert::pretrained::MODELS_DIR_VAR, &models)
        .output()
        .expect("run veil chat");
    let local = json(&local, "veil chat (in memory)");
    assert_eq!(local["mode"], "private");
    assert_eq!(ids(&network["prompt_tokens"]), ids(&local["prompt_tokens"]));
    assert_eq!(
        ids(&network["tokens"]),
        ids(&local["tokens"]),
        "{network} vs {local}"
    );
    assert_eq!(network["text"], local["text"]);

    a_turn_its_caller_stops_ends_at_that_token(&net, &models);
    a_crashed_party_fails_the_turn(&net, &models);
}

/// What a turn through the SDK needs: the client (coordinator connection), a watcher with the same key
/// (the job listing shows a client its own jobs only), the client's QUIC endpoint, the model file and the
/// rendered prompt.
struct LibraryClient {
    client: veil_client::Client,
    watcher: veil_node::api_client::ApiClient,
    quic: veil_node::client::Client,
    file: veil_client::ChatModelFile,
    prompt: Vec<u32>,
}

fn library_client(net: &Devnet, models: &Path) -> LibraryClient {
    use veil_node::api_client::ApiClient;
    let (address, key) = net.coordinator();
    let call = |identity: &veil_node::Identity| {
        ApiClient::new(identity, key, address.clone(), Duration::from_secs(30)).expect("api")
    };
    let identity = veil_node::Identity::generate().expect("identity");
    let client = veil_client::Client::new(
        call(&identity),
        key,
        veil_node::envelope::OpeningKey::generate(),
    );
    let watcher = call(&identity);
    let quic =
        veil_node::client::Client::new(identity, veil_node::client::ClientOptions::default())
            .expect("quic client");
    let file = veil_client::ChatModelFile::load(&models.join(MODEL).join(FILE)).expect("model");
    let prompt = file
        .prompt_tokens(&[veil_client::Message::new("user", PROMPT)])
        .expect("prompt");
    LibraryClient {
        client,
        watcher,
        quic,
        file,
        prompt,
    }
}

fn twelve_tokens() -> veil_client::ChatOptions {
    veil_client::ChatOptions {
        max_tokens: 12,
        ..veil_client::ChatOptions::default()
    }
}

/// A caller that stops the turn after the first token (a streaming client gone) ends it there: one token,
/// `FinishReason::Cancelled`, and the job is done, not left generating.
fn a_turn_its_caller_stops_ends_at_that_token(net: &Devnet, models: &Path) {
    let c = library_client(net, models);
    let turn = c
        .client
        .chat(&c.quic, &c.file, &c.prompt, &twelve_tokens(), |_, _| {
            std::ops::ControlFlow::Break(())
        })
        .expect("a stopped turn");
    assert_eq!(turn.tokens.len(), 1, "{:?}", turn.tokens);
    assert_eq!(turn.finish, veil_client::FinishReason::Cancelled);
    let view: veil_node::api::JobView = c
        .watcher
        .get_json(&veil_node::api::job(turn.job))
        .expect("job status");
    assert_eq!(view.phase, "done", "{view:?}");
}

/// A party that crashes mid-turn (after the first token) fails the turn: `ChatError::Turn` with every
/// party's reason; the client cancelled the job, which the coordinator records failed.
fn a_crashed_party_fails_the_turn(net: &Devnet, models: &Path) {
    let c = library_client(net, models);
    let mut killed = None;
    let result = c
        .client
        .chat(&c.quic, &c.file, &c.prompt, &twelve_tokens(), |_, _| {
            if killed.is_none() {
                let jobs: Vec<veil_node::api::JobView> =
                    c.watcher.get_json(veil_node::api::JOBS).expect("jobs");
                let running = jobs
                    .iter()
                    .find(|j| j.phase == "running")
                    .expect("the running turn");
                let committee = running.committee.as_ref().expect("committee");
                killed = Some((running.id, net.kill_node(&committee.parties[1].public_key)));
            }
            std::ops::ControlFlow::Continue(())
        });
    let (job, _) = killed.expect("a party was killed after the first token");
    match result {
        Err(veil_client::ChatError::Turn {
            job: failed,
            reason,
        }) => {
            assert_eq!(failed, job);
            assert!(
                reason.contains("the turn failed") && reason.contains("[party"),
                "{reason}"
            );
        }
        Err(e) => panic!("not a failed turn: {e}"),
        Ok(turn) => panic!("the turn went on without a party: {:?}", turn.tokens),
    }
    let view: veil_node::api::JobView = c
        .watcher
        .get_json(&veil_node::api::job(job))
        .expect("job status");
    assert_eq!(view.phase, "failed", "{view:?}");
}
