//! Runs the simulation from the library alone (no CLI): `cargo run --release -p veil-scheduler --example
//! sim_quick -- NODES JOBS [SEED] [KEYS]`; prints the JSON-like debug report.
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let get = |i: usize, d: u64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let keys = args
        .get(4)
        .map(|s| {
            s.split(',')
                .filter_map(veil_scheduler::DomainKey::parse)
                .collect()
        })
        .unwrap_or_else(|| vec![veil_scheduler::DomainKey::Operator]);
    let cfg = veil_scheduler::sim::SimConfig {
        nodes: get(1, 2000) as usize,
        jobs: get(2, 20000) as usize,
        seed: get(3, 7),
        collusion_keys: keys,
        ..Default::default()
    };
    match veil_scheduler::sim::run(&cfg) {
        Ok(r) => println!("{r:#?}"),
        Err(e) => eprintln!("error: {e}"),
    }
}
