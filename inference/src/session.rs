//! One loaded model: its manifest and an ONNX Runtime session, checked against each other.
//!
//! [`ModelSession::open`] verifies the file's SHA-256, loads it, and refuses it when the manifest
//! and the model's declared inputs/outputs disagree (names, element types, ranks, fixed
//! dimensions). Execution providers: CPU always, with an explicit intra-op thread count; with
//! [`ExecutionPreference::Auto`], TensorRT then CUDA are tried first when the loaded library has
//! them, and any failure falls back to CPU with a note saying why ([`ModelSession::notes`]).
//!
//! `Session::run` needs `&mut self`, so a session belongs to one thread: see [`crate::worker`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ort::ep::ExecutionProviderDispatch;
use ort::session::Session;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::value::{TensorElementType, TensorRef, ValueType};
use sha2::Digest;

use crate::error::{Error, Result};
use crate::manifest::{DType, ModelManifest};
use crate::runtime::runtime;

/// Which execution providers to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExecutionPreference {
    /// CPU only.
    Cpu,
    /// TensorRT, then CUDA, when the loaded ONNX Runtime has them; else CPU.
    #[default]
    Auto,
}

/// How sessions are built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionOptions {
    /// Intra-op threads of the CPU provider (at least 1).
    pub intra_threads: usize,
    pub execution: ExecutionPreference,
}

impl Default for SessionOptions {
    /// All cores up to 4, and [`ExecutionPreference::Auto`].
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        Self { intra_threads: cores.clamp(1, 4), execution: ExecutionPreference::Auto }
    }
}

/// A dense `f32` tensor, row-major.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(Error::Input(format!("tensor of shape {shape:?} needs {n} values, got {}", data.len())));
        }
        Ok(Self { shape, data })
    }
}

/// What the ONNX model declares for one input or output.
#[derive(Debug, Clone, PartialEq)]
pub struct DeclaredTensor {
    pub name: String,
    /// `None` for non-tensor values and element types a manifest cannot name.
    pub dtype: Option<DType>,
    /// `-1` for dynamic dimensions.
    pub shape: Vec<i64>,
}

/// The SHA-256 of `bytes` as lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A loaded model.
#[derive(Debug)]
pub struct ModelSession {
    manifest: Arc<ModelManifest>,
    model_path: PathBuf,
    session: Session,
    provider: &'static str,
    notes: Vec<String>,
}

impl ModelSession {
    /// Verify the checksum, load the model and check it against its manifest.
    pub fn open(manifest: Arc<ModelManifest>, model_path: &Path, options: &SessionOptions) -> Result<Self> {
        let bytes = read_verified(&manifest, model_path)?;
        let rt = runtime()?;
        let threads = options.intra_threads.max(1);
        let base = || -> Result<SessionBuilder> {
            let ctx = "configuring a session";
            Session::builder(rt.environment())
                .map_err(|e| Error::ort(ctx, e))?
                .with_optimization_level(GraphOptimizationLevel::Level3)
                .map_err(|e| Error::ort(ctx, e))?
                .with_intra_threads(threads)
                .map_err(|e| Error::ort(ctx, e))?
                .with_inter_threads(1)
                .map_err(|e| Error::ort(ctx, e))?
                // Idle intra-op threads sleep instead of spinning: Lucent's own pre/post-processing
                // runs between model calls and needs the cores.
                .with_intra_op_spinning(false)
                .map_err(|e| Error::ort(ctx, e))
        };
        let load_error = |e: ort::Error| Error::ModelLoad { path: model_path.to_path_buf(), message: e.to_string() };
        let mut notes = Vec::new();
        let mut chosen: Option<(Session, &'static str)> = None;
        if options.execution == ExecutionPreference::Auto {
            let mut gpu: Vec<(&'static str, ExecutionProviderDispatch)> = Vec::new();
            if rt.tensorrt_available() {
                gpu.push(("TensorRT", ort::ep::TensorRT::default().build().error_on_failure()));
            }
            if rt.cuda_available() {
                gpu.push(("CUDA", ort::ep::CUDA::default().build().error_on_failure()));
            }
            for (name, ep) in gpu {
                match base()?.with_execution_providers([ep]) {
                    Ok(mut builder) => match builder.commit_from_memory(&bytes) {
                        Ok(session) => {
                            chosen = Some((session, name));
                            break;
                        }
                        Err(e) => {
                            notes.push(format!("{name} could not run this model ({e}); trying the next provider"))
                        }
                    },
                    Err(e) => notes.push(format!("{name} is in the library but could not be registered ({e})")),
                }
            }
            if chosen.is_none() {
                notes.push(if rt.cuda_available() || rt.tensorrt_available() {
                    format!("no GPU execution provider could be used; running on CPU with {threads} threads")
                } else {
                    format!(
                        "the loaded ONNX Runtime has no GPU execution provider (the PyPI onnxruntime wheel is \
                         CPU-only); running on CPU with {threads} threads"
                    )
                });
            }
        }
        let (session, provider) = match chosen {
            Some(s) => s,
            None => {
                let mut builder = base()?
                    .with_execution_providers([ort::ep::CPU::default().with_arena_allocator(true).build()])
                    .map_err(|e| Error::ort("registering the CPU provider", e))?;
                (builder.commit_from_memory(&bytes).map_err(load_error)?, "CPU")
            }
        };
        for note in &notes {
            tracing::info!(model = %manifest.id, "{note}");
        }
        let inputs: Vec<DeclaredTensor> = session.inputs().iter().map(|o| declared(o.name(), o.dtype())).collect();
        let outputs: Vec<DeclaredTensor> = session.outputs().iter().map(|o| declared(o.name(), o.dtype())).collect();
        check_declared(&manifest, &inputs, &outputs)?;
        Ok(Self { manifest, model_path: model_path.to_path_buf(), session, provider, notes })
    }

    pub fn manifest(&self) -> &ModelManifest {
        &self.manifest
    }

    pub fn manifest_arc(&self) -> Arc<ModelManifest> {
        Arc::clone(&self.manifest)
    }

    pub fn model_path(&self) -> &Path {
        &self.model_path
    }

    /// "CPU", "CUDA" or "TensorRT".
    pub fn execution_provider(&self) -> &'static str {
        self.provider
    }

    /// Why a GPU provider was not used, when one was wanted.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Run the model on its (single) input; returns every manifest output by name.
    pub fn run(&mut self, input: &Tensor) -> Result<BTreeMap<String, Tensor>> {
        self.run_with(input, |outputs| {
            Ok(outputs
                .iter()
                .map(|o| (o.name.to_owned(), Tensor { shape: o.shape.clone(), data: o.data.to_vec() }))
                .collect())
        })
    }

    /// Like [`Self::run`], but hands `read` views of the outputs in ONNX Runtime's memory (in the
    /// manifest's output order), so a large result is read once instead of copied first.
    pub fn run_with<R>(&mut self, input: &Tensor, read: impl FnOnce(&[OutputView<'_>]) -> Result<R>) -> Result<R> {
        let manifest = Arc::clone(&self.manifest);
        let [spec] = manifest.inputs.as_slice() else {
            return Err(Error::Input(format!(
                "model `{}` takes {} inputs; run() feeds one",
                manifest.id,
                manifest.inputs.len()
            )));
        };
        if input.shape.len() != spec.shape.len()
            || input.shape.iter().zip(&spec.shape).any(|(&got, &want)| want != -1 && got as i64 != want)
        {
            return Err(Error::Input(format!(
                "model `{}` input `{}` has shape {:?}, got {:?}",
                manifest.id, spec.name, spec.shape, input.shape
            )));
        }
        let value = TensorRef::from_array_view((input.shape.clone(), input.data.as_slice()))
            .map_err(|e| Error::ort("creating the input tensor", e))?;
        let outputs = self
            .session
            .run(ort::inputs![spec.name.as_str() => value])
            .map_err(|e| Error::ort(format!("running model `{}`", manifest.id), e))?;
        let mut views = Vec::with_capacity(manifest.outputs.len());
        for o in &manifest.outputs {
            let bad = |message: String| Error::Output { model: manifest.id.clone(), output: o.name.clone(), message };
            let value = outputs.get(o.name.as_str()).ok_or_else(|| bad("missing from the results".into()))?;
            let (shape, data) = value.try_extract_tensor::<f32>().map_err(|e| bad(e.to_string()))?;
            let shape: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
            if shape.len() != o.shape.len()
                || shape.iter().zip(&o.shape).any(|(&got, &want)| want != -1 && got as i64 != want)
            {
                return Err(bad(format!("has shape {shape:?}, the manifest says {:?}", o.shape)));
            }
            views.push(OutputView { name: &o.name, shape, data });
        }
        read(&views)
    }
}

/// One output of [`ModelSession::run_with`], borrowed from ONNX Runtime.
#[derive(Debug)]
pub struct OutputView<'a> {
    pub name: &'a str,
    pub shape: Vec<usize>,
    pub data: &'a [f32],
}

/// Read the model file and check its SHA-256 against the manifest.
pub(crate) fn read_verified(manifest: &ModelManifest, model_path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(model_path).map_err(|e| Error::io(model_path, e))?;
    let actual = sha256_hex(&bytes);
    if actual != manifest.sha256 {
        return Err(Error::ChecksumMismatch {
            path: model_path.to_path_buf(),
            expected: manifest.sha256.clone(),
            actual,
        });
    }
    Ok(bytes)
}

fn declared(name: &str, ty: &ValueType) -> DeclaredTensor {
    match ty {
        ValueType::Tensor { ty, shape, .. } => {
            DeclaredTensor { name: name.to_owned(), dtype: dtype_of(*ty), shape: shape.iter().copied().collect() }
        }
        _ => DeclaredTensor { name: name.to_owned(), dtype: None, shape: Vec::new() },
    }
}

fn dtype_of(t: TensorElementType) -> Option<DType> {
    Some(match t {
        TensorElementType::Float32 => DType::Float32,
        TensorElementType::Float16 => DType::Float16,
        TensorElementType::Float64 => DType::Float64,
        TensorElementType::Int8 => DType::Int8,
        TensorElementType::Uint8 => DType::Uint8,
        TensorElementType::Int16 => DType::Int16,
        TensorElementType::Uint16 => DType::Uint16,
        TensorElementType::Int32 => DType::Int32,
        TensorElementType::Int64 => DType::Int64,
        TensorElementType::Bool => DType::Bool,
        _ => return None,
    })
}

/// Refuse a model whose declared inputs/outputs disagree with its manifest. A dimension the
/// model declares dynamic may be fixed by the manifest; a fixed one must match exactly.
pub fn check_declared(manifest: &ModelManifest, inputs: &[DeclaredTensor], outputs: &[DeclaredTensor]) -> Result<()> {
    let mismatch = |field: String, message: String| Error::ModelMismatch { model: manifest.id.clone(), field, message };
    let specs_in = manifest.inputs.iter().map(|s| (s.name.as_str(), s.dtype, s.shape.as_slice()));
    let specs_out = manifest.outputs.iter().map(|s| (s.name.as_str(), s.dtype, s.shape.as_slice()));
    for (what, specs, declared) in
        [("inputs", specs_in.collect::<Vec<_>>(), inputs), ("outputs", specs_out.collect::<Vec<_>>(), outputs)]
    {
        for (i, (name, dtype, shape)) in specs.iter().enumerate() {
            let Some(d) = declared.iter().find(|d| d.name == *name) else {
                let names: Vec<&str> = declared.iter().map(|d| d.name.as_str()).collect();
                return Err(mismatch(
                    format!("{what}[{i}].name"),
                    format!("the manifest says {name:?}, the model's {what} are {names:?}"),
                ));
            };
            if d.dtype != Some(*dtype) {
                return Err(mismatch(
                    format!("{what}[{i}].dtype"),
                    format!(
                        "the manifest says {}, the model declares {}",
                        dtype.name(),
                        d.dtype.map_or("a non-tensor or unsupported type", DType::name)
                    ),
                ));
            }
            if d.shape.len() != shape.len() {
                return Err(mismatch(
                    format!("{what}[{i}].shape"),
                    format!(
                        "the manifest says rank {} {shape:?}, the model declares rank {} {:?}",
                        shape.len(),
                        d.shape.len(),
                        d.shape
                    ),
                ));
            }
            for (axis, (&want, &got)) in shape.iter().zip(&d.shape).enumerate() {
                if got != -1 && want != got {
                    return Err(mismatch(
                        format!("{what}[{i}].shape[{axis}]"),
                        format!("the manifest says {want}, the model declares {got} (shape {:?})", d.shape),
                    ));
                }
            }
        }
        for d in declared {
            if !specs.iter().any(|(name, _, _)| *name == d.name) {
                return Err(mismatch(
                    what.to_owned(),
                    format!("the model declares {:?}, which the manifest does not list", d.name),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> ModelManifest {
        let text = include_str!("../../models/test/cxr_toy.toml");
        ModelManifest::from_toml_str(text, Path::new("cxr_toy.toml")).unwrap()
    }

    fn declared_ok() -> (Vec<DeclaredTensor>, Vec<DeclaredTensor>) {
        let t = |name: &str, shape: &[i64]| DeclaredTensor {
            name: name.into(),
            dtype: Some(DType::Float32),
            shape: shape.to_vec(),
        };
        (vec![t("image", &[-1, 1, 224, 224])], vec![t("logits", &[-1, 6]), t("maps", &[-1, 6, 56, 56])])
    }

    fn field(e: Error) -> String {
        match e {
            Error::ModelMismatch { field, .. } => field,
            other => panic!("{other}"),
        }
    }

    #[test]
    fn agreeing_declarations_pass() {
        let (i, o) = declared_ok();
        check_declared(&manifest(), &i, &o).unwrap();
    }

    #[test]
    fn each_disagreement_names_its_field() {
        let m = manifest();
        let (mut i, o) = declared_ok();
        i[0].name = "input".into();
        assert_eq!(field(check_declared(&m, &i, &o).unwrap_err()), "inputs[0].name");
        let (mut i, o) = declared_ok();
        i[0].shape[2] = 256;
        assert_eq!(field(check_declared(&m, &i, &o).unwrap_err()), "inputs[0].shape[2]");
        let (mut i, o) = declared_ok();
        i[0].dtype = Some(DType::Float16);
        assert_eq!(field(check_declared(&m, &i, &o).unwrap_err()), "inputs[0].dtype");
        let (i, mut o) = declared_ok();
        o[1].shape = vec![-1, 6, 56];
        assert_eq!(field(check_declared(&m, &i, &o).unwrap_err()), "outputs[1].shape");
        let (i, mut o) = declared_ok();
        o.push(DeclaredTensor { name: "extra".into(), dtype: Some(DType::Float32), shape: vec![1] });
        assert_eq!(field(check_declared(&m, &i, &o).unwrap_err()), "outputs");
    }

    #[test]
    fn a_dynamic_model_dimension_may_be_fixed_by_the_manifest() {
        let (mut i, o) = declared_ok();
        i[0].shape = vec![-1, 1, -1, -1];
        check_declared(&manifest(), &i, &o).unwrap();
    }
}
