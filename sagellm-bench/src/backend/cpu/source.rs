//! What `--model` names: a GGUF file, a Hugging Face model folder, or a hub id to fetch.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

/// How long to wait for the hub's first answer before calling it unreachable.
const HUB_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The files of one model.
#[derive(Debug, Clone)]
pub enum ModelFiles {
    /// Weights and tokenizer in one file.
    Gguf(PathBuf),
    /// `config.json`, the safetensors shards and `tokenizer.json`.
    Folder {
        config: PathBuf,
        weights: Vec<PathBuf>,
        tokenizer: PathBuf,
    },
}

/// Finds the model files `--model` names, fetching a hub id into the Hugging Face cache.
pub fn resolve(model: &str) -> Result<ModelFiles, String> {
    let path = Path::new(model);
    if path.is_file() {
        return gguf_file(path);
    }
    if path.is_dir() {
        return folder(path);
    }
    if path.exists() {
        return Err(format!(
            "model path `{model}` is a device, a pipe or a socket; pass a .gguf file or a folder with config.json, *.safetensors and tokenizer.json"
        ));
    }
    if looks_like_a_path(model) {
        return Err(format!(
            "model path `{model}` does not exist; pass a .gguf file or a folder with config.json, *.safetensors and tokenizer.json"
        ));
    }
    from_hub(model)
}

fn looks_like_a_path(model: &str) -> bool {
    model.starts_with('/')
        || model.starts_with('.')
        || model.starts_with('~')
        || model.ends_with(".gguf")
        || model.ends_with(".safetensors")
        || model.matches('/').count() > 1
        || model.contains('\\')
}

fn gguf_file(path: &Path) -> Result<ModelFiles, String> {
    let mut magic = [0u8; 4];
    let read = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()));
    match read {
        Ok(()) if &magic == b"GGUF" => Ok(ModelFiles::Gguf(path.to_path_buf())),
        _ => Err(format!(
            "`{}` is not a GGUF file (it does not start with `GGUF`); pass a .gguf file, or the folder that holds config.json, *.safetensors and tokenizer.json",
            path.display()
        )),
    }
}

fn folder(dir: &Path) -> Result<ModelFiles, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot list `{}`: {e}", dir.display()))?;
    let mut weights = Vec::new();
    let mut ggufs = Vec::new();
    let mut has_bin = false;
    for entry in entries.flatten() {
        let p = entry.path();
        match p.extension().and_then(|e| e.to_str()) {
            Some("safetensors") => weights.push(p),
            Some("gguf") => ggufs.push(p),
            Some("bin") => has_bin = true,
            _ => {}
        }
    }
    weights.sort();
    let config = dir.join("config.json");
    let tokenizer = dir.join("tokenizer.json");
    if weights.is_empty() {
        if ggufs.len() == 1 {
            return gguf_file(&ggufs[0]);
        }
        let hint = if has_bin {
            " (it has PyTorch .bin weights: convert them to safetensors, e.g. with transformers' save_pretrained(safe_serialization=True))"
        } else {
            ""
        };
        return Err(format!(
            "`{}` has no *.safetensors weights{hint}; pass a folder with config.json, *.safetensors and tokenizer.json, or a .gguf file",
            dir.display()
        ));
    }
    for (file, what) in [(&config, "config.json"), (&tokenizer, "tokenizer.json")] {
        if !file.is_file() {
            return Err(format!(
                "`{}` has no {what}; a model folder needs config.json, *.safetensors and tokenizer.json",
                dir.display()
            ));
        }
    }
    Ok(ModelFiles::Folder {
        config,
        weights,
        tokenizer,
    })
}

/// Fetches `config.json`, `tokenizer.json` and `model.safetensors` of a hub model into the
/// Hugging Face cache (or finds them there), with a bounded wait for the first answer.
fn from_hub(id: &str) -> Result<ModelFiles, String> {
    let advice = format!(
        "download the model where the hub is reachable and pass its folder (config.json, *.safetensors, tokenizer.json) or a .gguf file: --model /path/to/{}",
        id.rsplit('/').next().unwrap_or(id)
    );
    const FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];
    let cache = hf_hub::Cache::from_env().model(id.to_string());
    let cached: Vec<Option<PathBuf>> = FILES.iter().map(|f| cache.get(f)).collect();
    if cached.iter().all(Option::is_some) {
        return cached_files(cached);
    }
    if std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| !v.is_empty() && v != "0") {
        return Err(format!(
            "`{id}` is not in the Hugging Face cache and HF_HUB_OFFLINE is set; {advice}"
        ));
    }
    let (tx, rx) = mpsc::channel();
    let model_id = id.to_string();
    // The download runs on its own thread so an unanswered connection cannot hang the run: the
    // first file must arrive within the timeout, the (larger) weights may then take their time.
    std::thread::spawn(move || {
        let api = match hf_hub::api::sync::ApiBuilder::from_env()
            .with_progress(false)
            .with_retries(0)
            .build()
        {
            Ok(api) => api,
            Err(e) => {
                let _ = tx.send(Err(e.to_string()));
                return;
            }
        };
        let repo = api.model(model_id);
        for file in FILES {
            let got = repo.get(file).map_err(|e| format!("{file}: {e}"));
            let failed = got.is_err();
            if tx.send(got).is_err() || failed {
                return;
            }
        }
    });
    let mut paths = Vec::new();
    for (i, file) in FILES.iter().enumerate() {
        let answer = if i == 0 {
            rx.recv_timeout(HUB_CONNECT_TIMEOUT).map_err(|_| {
                format!(
                    "no answer from the Hugging Face hub within {}s",
                    HUB_CONNECT_TIMEOUT.as_secs()
                )
            })
        } else {
            rx.recv()
                .map_err(|_| format!("the download of {file} stopped"))
        };
        match answer.and_then(|r| r) {
            Ok(p) => paths.push(Some(p)),
            Err(e) => {
                return Err(format!(
                    "cannot fetch `{id}` from the Hugging Face hub ({e}); the machine may be offline or the id wrong. {advice}"
                ))
            }
        }
    }
    cached_files(paths)
}

fn cached_files(paths: Vec<Option<PathBuf>>) -> Result<ModelFiles, String> {
    match <[Option<PathBuf>; 3]>::try_from(paths) {
        Ok([Some(config), Some(tokenizer), Some(weights)]) => Ok(ModelFiles::Folder {
            config,
            weights: vec![weights],
            tokenizer,
        }),
        _ => Err("the hub download returned fewer files than asked for".to_string()),
    }
}
