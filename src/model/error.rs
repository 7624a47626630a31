//! Errors of model import and of running a model on an input.

use thiserror::Error;

/// A node whose operator this crate does not implement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsupportedOp {
    /// Node name.
    pub node: String,
    /// ONNX op type (with its domain when not the default one).
    pub op: String,
}

fn list_unsupported(ops: &[UnsupportedOp]) -> String {
    ops.iter().map(|u| format!("{} (node '{}')", u.op, u.node)).collect::<Vec<_>>().join(", ")
}

/// What is wrong with an initializer's external data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExternalDataProblem {
    /// The location is absolute, empty or leaves the model's folder (`..`).
    OutsideModelFolder,
    /// The caller did not provide the file (see `external_data_locations`).
    NotProvided,
    /// `offset` or `length` is not a number.
    BadNumber,
    /// The byte range lies outside the file.
    OutOfRange {
        /// First byte.
        offset: usize,
        /// Bytes wanted.
        length: usize,
        /// Bytes in the file.
        file_len: usize,
    },
}

/// Why a model could not be imported, or could not run on a given input.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ModelError {
    /// The bytes are not a valid ONNX protobuf (corrupt or truncated file).
    #[error("malformed or truncated ONNX file: {0}")]
    Malformed(String),
    /// The model has no graph.
    #[error("the ONNX model has no graph")]
    MissingGraph,
    /// The default-domain opset is older than 13.
    #[error("ONNX opset {0} is not supported (13 or newer is)")]
    UnsupportedOpset(i64),
    /// The graph does not have exactly one input and one output.
    #[error("the graph must have one input and one output, it has {inputs} and {outputs}")]
    UnsupportedSignature {
        /// Non-initializer graph inputs.
        inputs: usize,
        /// Graph outputs.
        outputs: usize,
    },
    /// Shape arithmetic reads a symbolic dimension of the input: the graph exists once the
    /// input's shape is known (`import_onnx_for_input`; `Model` does it per request shape).
    #[error("node '{node}': the shape of '{value}' depends on the input's symbolic dimensions; import it for an input shape")]
    NeedsInputShape {
        /// The node that reads the shape.
        node: String,
        /// The value whose shape it reads.
        value: String,
    },
    /// An initializer's external data cannot be read.
    #[error("initializer '{initializer}': external data '{location}': {problem:?}")]
    ExternalData {
        /// The initializer.
        initializer: String,
        /// The location it names.
        location: String,
        /// What is wrong.
        problem: ExternalDataProblem,
    },
    /// Nodes use operators this crate does not implement: every one of them, in graph order.
    #[error("unsupported operators: {}", list_unsupported(.0))]
    UnsupportedOps(Vec<UnsupportedOp>),
    /// A node uses an attribute value this crate does not implement.
    #[error("node '{node}': attribute '{attribute}' is not supported: {reason}")]
    UnsupportedAttribute {
        /// Node name.
        node: String,
        /// Attribute name.
        attribute: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A node lacks an input it needs, or an input that must be constant is not.
    #[error("node '{node}': input {index} {reason}")]
    BadInput {
        /// Node name.
        node: String,
        /// Input position.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A node reads a value that no earlier node or initializer produces.
    #[error("node '{node}': reads '{value}', which nothing produces before it")]
    UnknownValue {
        /// Node name.
        node: String,
        /// Value name.
        value: String,
    },
    /// An initializer has an unsupported type or inconsistent data.
    #[error("initializer '{name}': {reason}")]
    BadInitializer {
        /// Initializer name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The input given to the model does not have the shape the model declares.
    #[error("input '{name}' must have shape {expected} but has {got:?}")]
    InputShape {
        /// Graph input name.
        name: String,
        /// Declared shape, `?` for free dimensions.
        expected: String,
        /// The shape that was given.
        got: Vec<usize>,
    },
    /// The shapes reaching a node do not fit its operation.
    #[error("node '{node}': {reason}")]
    Shape {
        /// Node name.
        node: String,
        /// What does not fit.
        reason: String,
    },
}
