//! ONNX external data: initializers whose bytes live in a file beside the model (the dynamo
//! exporter writes `model.onnx.data` for every model). The caller reads the files the model names
//! (the asset loader through Bevy's asset sources) and the import inlines their bytes.

use std::collections::HashMap;

use prost::Message;

use super::error::{ExternalDataProblem, ModelError};
use super::onnx_pb::{self as pb, tensor_proto::DataLocation};

/// The contents of a model's external data files, by the location its initializers name.
pub type ExternalFiles = HashMap<String, Vec<u8>>;

fn is_external(t: &pb::TensorProto) -> bool {
    t.data_location == Some(DataLocation::External as i32)
}

fn entry<'a>(t: &'a pb::TensorProto, key: &str) -> Option<&'a str> {
    t.external_data.iter().find(|e| e.key.as_deref() == Some(key)).and_then(|e| e.value.as_deref())
}

fn problem(initializer: &str, location: &str, problem: ExternalDataProblem) -> ModelError {
    ModelError::ExternalData { initializer: initializer.into(), location: location.into(), problem }
}

/// A location a model may name: a relative path inside the model's folder (no `..`, not absolute).
fn checked_location(name: &str, location: &str) -> Result<String, ModelError> {
    let path = std::path::Path::new(location);
    let inside = !location.is_empty()
        && path.components().all(|c| matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir));
    if !inside {
        return Err(problem(name, location, ExternalDataProblem::OutsideModelFolder));
    }
    Ok(location.to_string())
}

/// The external data files an ONNX file's initializers read, each once, in the order they appear.
pub fn external_data_locations(bytes: &[u8]) -> Result<Vec<String>, ModelError> {
    let model = pb::ModelProto::decode(bytes).map_err(|e| ModelError::Malformed(e.to_string()))?;
    let mut locations: Vec<String> = Vec::new();
    for t in model.graph.iter().flat_map(|g| &g.initializer).filter(|t| is_external(t)) {
        let name = t.name.as_deref().unwrap_or_default();
        let location = checked_location(name, entry(t, "location").unwrap_or_default())?;
        if !locations.contains(&location) {
            locations.push(location);
        }
    }
    Ok(locations)
}

/// Replaces every external initializer's reference by its bytes from `files`.
pub(super) fn inline_external_data(graph: &mut pb::GraphProto, files: &ExternalFiles) -> Result<(), ModelError> {
    for t in graph.initializer.iter_mut().filter(|t| is_external(t)) {
        let name = t.name.clone().unwrap_or_default();
        let location = checked_location(&name, entry(t, "location").unwrap_or_default())?;
        let file = files.get(&location).ok_or_else(|| problem(&name, &location, ExternalDataProblem::NotProvided))?;
        let number = |key: &str| -> Result<Option<usize>, ModelError> {
            entry(t, key).map(|v| v.parse::<usize>().map_err(|_| problem(&name, &location, ExternalDataProblem::BadNumber))).transpose()
        };
        let offset = number("offset")?.unwrap_or(0);
        let length = number("length")?.unwrap_or(file.len().saturating_sub(offset));
        let out_of_range = ExternalDataProblem::OutOfRange { offset, length, file_len: file.len() };
        let end = offset.checked_add(length).filter(|&end| end <= file.len()).ok_or_else(|| problem(&name, &location, out_of_range))?;
        t.raw_data = Some(file[offset..end].to_vec());
        t.data_location = Some(DataLocation::Default as i32);
        t.external_data.clear();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::onnx_pb::tensor_proto::DataType;

    fn external(location: &str, offset: &str, length: &str) -> pb::TensorProto {
        let entry = |key: &str, value: &str| pb::StringStringEntryProto { key: Some(key.into()), value: Some(value.into()) };
        pb::TensorProto {
            name: Some("w".into()),
            dims: vec![2],
            data_type: Some(DataType::Float as i32),
            data_location: Some(DataLocation::External as i32),
            external_data: vec![entry("location", location), entry("offset", offset), entry("length", length)],
            ..Default::default()
        }
    }

    fn graph(t: pb::TensorProto) -> pb::GraphProto {
        pb::GraphProto { initializer: vec![t], ..Default::default() }
    }

    #[test]
    fn an_external_initializer_takes_its_bytes_from_the_named_file() {
        let mut g = graph(external("w.data", "4", "8"));
        let values: Vec<u8> = [0f32, 1.5, -2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        inline_external_data(&mut g, &ExternalFiles::from([("w.data".to_string(), values.clone())])).unwrap();
        assert_eq!(g.initializer[0].raw_data.as_deref(), Some(&values[4..12]));
        assert_eq!(g.initializer[0].data_location, Some(DataLocation::Default as i32));
    }

    #[test]
    fn locations_outside_the_model_folder_missing_files_and_short_files_are_refused() {
        let refused = |t: pb::TensorProto, files: &ExternalFiles| match inline_external_data(&mut graph(t), files) {
            Err(ModelError::ExternalData { initializer, problem, .. }) if initializer == "w" => problem,
            other => panic!("{other:?}"),
        };
        for location in ["../secret", "/etc/passwd", ""] {
            assert_eq!(refused(external(location, "0", "8"), &ExternalFiles::new()), ExternalDataProblem::OutsideModelFolder, "{location}");
        }
        assert_eq!(refused(external("w.data", "0", "8"), &ExternalFiles::new()), ExternalDataProblem::NotProvided);
        let short = ExternalFiles::from([("w.data".to_string(), vec![0; 6])]);
        assert_eq!(refused(external("w.data", "0", "8"), &short), ExternalDataProblem::OutOfRange { offset: 0, length: 8, file_len: 6 });
        assert_eq!(refused(external("w.data", "x", "8"), &short), ExternalDataProblem::BadNumber);
    }
}
