//! redb persistence: write, drop, reopen from the same path; nothing is lost.

mod common;

use common::*;
use veil_scheduler::{
    Batch, Config, DomainKey, Event, Job, JobId, JobOutcome, JobPolicy, Phase, Placement,
    SelectRequest, Store, StoreError,
};

#[test]
fn registry_and_jobs_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metainf.redb");
    let (mut reg, ids) = simple_registry(40, 12, 3, vec![DomainKey::Operator]);
    reg.configure_region_rtt("r-0", "r-1", 40_000);
    reg.report_rtts(ids[0], &[(ids[1], 12_345), (ids[2], 777)])
        .unwrap();
    // A pair counts once both ends reported it (at the larger report).
    reg.report_rtts(ids[1], &[(ids[0], 10_000)]).unwrap();
    reg.record_outcome(ids[3], JobOutcome::Timeout, 5).unwrap();
    let d = demand(3, 4, 1);
    // One job in flight (its reservation must come back), one done (its must not).
    let c1 = reg
        .select(&SelectRequest {
            demand: &d,
            seed: 1,
            exclude: &[],
        })
        .unwrap();
    let p1 = Placement {
        committee: c1,
        demand: d,
    };
    reg.reserve(&p1).unwrap();
    let mut running = Job::new(JobId(1), vec![d], 11, JobPolicy::default(), 10);
    running
        .apply(Event::Schedule(vec![p1.clone()]), 10)
        .unwrap();
    running.apply(Event::Start, 11).unwrap();
    let c2 = reg
        .select(&SelectRequest {
            demand: &d,
            seed: 2,
            exclude: &[],
        })
        .unwrap();
    let p2 = Placement {
        committee: c2,
        demand: d,
    };
    reg.reserve(&p2).unwrap();
    let mut done = Job::new(JobId(2), vec![d], 12, JobPolicy::default(), 10);
    done.apply(Event::Schedule(vec![p2.clone()]), 10).unwrap();
    done.apply(Event::Start, 11).unwrap();
    done.apply(Event::OutputReady, 12).unwrap();
    let fx = done.apply(Event::Verified, 13).unwrap();
    for p in &fx.release {
        reg.release(p);
    }
    for (n, o) in fx.outcomes {
        reg.record_outcome(n, o, 13).unwrap();
    }
    {
        let store = Store::open(&path).unwrap();
        store.save_registry(&reg).unwrap();
        store
            .commit(&Batch {
                jobs: vec![running.clone(), done.clone()],
                ..Batch::default()
            })
            .unwrap();
    }
    // Reopen.
    let store = Store::open(&path).unwrap();
    let (back, jobs) = store.load_registry(Config::default()).unwrap();
    assert_eq!(jobs, vec![running.clone(), done.clone()]);
    assert_eq!(store.load_job(JobId(1)).unwrap(), Some(running));
    assert_eq!(back.records(), reg.records());
    assert_eq!(back.region_snapshot(), reg.region_snapshot());
    assert_eq!(back.config(), reg.config());
    for (a, b) in reg.nodes().zip(back.nodes()) {
        assert_eq!(a.free_memory(), b.free_memory(), "node {}", a.id());
        assert_eq!(a.active_jobs(), b.active_jobs());
        assert_eq!(a.state(), b.state());
        assert_eq!(a.is_eligible(), b.is_eligible());
        assert!((a.queued_seconds() - b.queued_seconds()).abs() < 1e-9);
    }
    assert_eq!(back.rtt_us(ids[1], ids[0]), 12_345);
    assert_eq!(back.rtt_us(ids[0], ids[4]), reg.rtt_us(ids[0], ids[4]));
    // The same decision after the restart.
    for seed in 0..10 {
        let req = SelectRequest {
            demand: &d,
            seed,
            exclude: &[],
        };
        assert_eq!(back.select(&req), reg.select(&req));
    }
    // Deleting a job.
    store
        .commit(&Batch {
            remove_jobs: vec![JobId(2)],
            ..Batch::default()
        })
        .unwrap();
    let jobs = store.load_jobs().unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].phase(), Phase::Running);
}

#[test]
fn a_fresh_store_is_empty_and_corruption_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.redb");
    let store = Store::open(&path).unwrap();
    assert!(store.load_nodes().unwrap().is_empty());
    assert!(store.load_jobs().unwrap().is_empty());
    assert_eq!(store.load_config().unwrap(), None);
    let (reg, jobs) = store.load_registry(Config::default()).unwrap();
    assert!(reg.is_empty() && jobs.is_empty());
    drop(store);
    // Write a value in an unknown format straight through redb, then read it back through the store.
    {
        use redb::{Database, TableDefinition};
        const JOBS: TableDefinition<u64, &[u8]> = TableDefinition::new("jobs");
        let db = Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(JOBS)
            .unwrap()
            .insert(5u64, [9u8, 1, 2].as_slice())
            .unwrap();
        tx.commit().unwrap();
    }
    let store = Store::open(&path).unwrap();
    match store.load_jobs() {
        Err(StoreError::Corrupt {
            table: "jobs", key, ..
        }) => assert_eq!(key, "j5"),
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn service_extras_persist_beside_their_records_and_go_with_their_job() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("extras.redb");
    let job = Job::new(JobId(9), vec![demand(2, 1, 1)], 3, JobPolicy::default(), 0);
    {
        let store = Store::open(&path).unwrap();
        store
            .commit(&Batch {
                jobs: vec![job.clone()],
                job_extras: vec![(JobId(9), b"job nine".to_vec())],
                node_extras: vec![(veil_scheduler::NodeId(4), b"node four".to_vec())],
                ..Batch::default()
            })
            .unwrap();
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(
        store.load_job_extras().unwrap(),
        vec![(JobId(9), b"job nine".to_vec())]
    );
    assert_eq!(
        store.load_node_extras().unwrap(),
        vec![(veil_scheduler::NodeId(4), b"node four".to_vec())]
    );
    // Removing the job removes its extras in the same transaction.
    store
        .commit(&Batch {
            remove_jobs: vec![JobId(9)],
            ..Batch::default()
        })
        .unwrap();
    assert!(store.load_jobs().unwrap().is_empty());
    assert!(store.load_job_extras().unwrap().is_empty());
    assert_eq!(store.load_node_extras().unwrap().len(), 1);
}

#[test]
fn named_records_persist_by_kind_and_stay_apart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("records.redb");
    {
        let store = Store::open(&path).unwrap();
        store
            .commit(&Batch {
                records: vec![
                    ("model/ab".into(), b"model ab".to_vec()),
                    ("receipt/1".into(), b"receipt one".to_vec()),
                    ("model/cd".into(), b"model cd".to_vec()),
                    ("modelx/zz".into(), b"another kind".to_vec()),
                ],
                ..Batch::default()
            })
            .unwrap();
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(
        store.load_records("model").unwrap(),
        vec![
            ("ab".to_string(), b"model ab".to_vec()),
            ("cd".to_string(), b"model cd".to_vec())
        ]
    );
    assert_eq!(
        store.load_records("receipt").unwrap(),
        vec![("1".to_string(), b"receipt one".to_vec())]
    );
    assert!(store.load_records("nothing").unwrap().is_empty());
}

/// Writes a bare redb file with one table and one entry, as an older veil (or another program) would have.
fn write_raw(path: &std::path::Path, table: &str, key: &str, value: &[u8]) {
    let db = redb::Database::create(path).unwrap();
    let tx = db.begin_write().unwrap();
    {
        let def: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new(table);
        let mut t = tx.open_table(def).unwrap();
        t.insert(key, value).unwrap();
    }
    tx.commit().unwrap();
}

#[test]
fn a_database_of_another_layout_is_refused_before_anything_is_read() {
    let dir = tempfile::tempdir().unwrap();
    // Written before layouts were recorded, with a record in it: its values could decode into wrong ones.
    let old = dir.path().join("old.redb");
    write_raw(&old, "meta", "config", &[1, 0, 0]);
    let err = Store::open(&old)
        .err()
        .expect("an unrecorded layout with data is refused");
    assert!(
        matches!(
            err,
            StoreError::Layout {
                found: None,
                expected: veil_scheduler::store::LAYOUT
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("fresh data directory"), "{err}");
    // A later (or earlier) recorded layout.
    let other = dir.path().join("other.redb");
    write_raw(&other, "meta", "layout", &99u32.to_le_bytes());
    let err = Store::open(&other)
        .err()
        .expect("another layout is refused");
    assert!(
        matches!(
            err,
            StoreError::Layout {
                found: Some(99),
                ..
            }
        ),
        "{err}"
    );
    // A damaged layout word is corrupt, not a layout.
    let damaged = dir.path().join("damaged.redb");
    write_raw(&damaged, "meta", "layout", &[2, 0]);
    assert!(matches!(
        Store::open(&damaged),
        Err(StoreError::Corrupt { table: "meta", .. })
    ));
}

#[test]
fn a_new_database_records_its_layout_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.redb");
    {
        let store = Store::open(&path).unwrap();
        store.save_jobs(Vec::new()).unwrap();
    }
    // Reopened by this build: the layout it wrote is its own.
    let store = Store::open(&path).unwrap();
    assert!(store.load_jobs().unwrap().is_empty());
    drop(store);
    let db = redb::Database::create(&path).unwrap();
    let tx = redb::ReadableDatabase::begin_read(&db).unwrap();
    let meta: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
    let t = tx.open_table(meta).unwrap();
    let layout = t.get("layout").unwrap().unwrap().value().to_vec();
    assert_eq!(layout, veil_scheduler::store::LAYOUT.to_le_bytes());
}
