//! The browser side of the web example: the page's query string, fetches, console lines and
//! the app.

use bevy::asset::AssetMetaCheck;
use bevy::prelude::*;
use bevy_p2p_inference::prelude::*;
use bevy_p2p_inference::web::web_runner;
use crate::image_texture::image_texture;
use bevy_p2p_inference::{headless_plugins, ContinuousRun, GpuTransfers, InferenceError, InferenceSystems, PeerRole};

use crate::room::{self, RoomOptions};
use crossbeam_channel::{Receiver, Sender};
use serde_json::json;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

/// The shipped images, classified in turn when no input is given.
pub const IMAGES: [&str; 10] = [
    "t_shirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot",
];

/// What the page's query string asks for.
#[derive(Resource, Clone, Debug)]
pub struct PageOptions {
    /// The model, relative to the assets folder.
    pub model: String,
    /// A stored float32 `.npy` input to classify, instead of the shipped images.
    input: Option<String>,
    /// Only the first rows of that input.
    rows: Option<usize>,
    /// How many requests to make.
    requests: usize,
    /// The room to join, if any.
    room: Option<RoomOptions>,
    /// A game page: the app draws into the page's canvas, with the inspector overlay.
    game: bool,
    /// `?source=texture`: each image goes to the GPU as a texture and the request reads it
    /// there (`ImageInferenceRequest`, preprocessed by the `image_input` kernel), instead of
    /// as a tensor.
    texture: bool,
    /// `?top_k=K`: each request reads back only its top K classes, taken on the GPU by the
    /// `top_k` kernel (`ReadBackTopK`); its `output` is then empty.
    top_k: Option<u32>,
    /// `?output=texture`: each output is also written into a texture as a colour map, read
    /// back and compared with the CPU reference (see [`crate::output_texture`]).
    output_texture: bool,
    /// `?continuous=1` (with `?source=texture`): a `ContinuousInference` on the first image's
    /// texture (a run every 2 frames, at most 2 in flight) instead of single requests; each run's
    /// prediction is reported, and `done` after `requests` of them.
    continuous: bool,
}

impl PageOptions {
    fn from_query() -> Result<Self, String> {
        let search = web_sys::window().and_then(|w| w.location().search().ok()).unwrap_or_default();
        let params = web_sys::UrlSearchParams::new_with_str(&search).ok();
        let get = |name: &str| params.as_ref().and_then(|p| p.get(name));
        Ok(Self {
            model: get("model").unwrap_or_else(|| "models/fashion_mobilenetv2.onnx".into()),
            input: get("input"),
            rows: get("rows").and_then(|n| n.parse().ok()),
            requests: get("requests").and_then(|n| n.parse().ok()).unwrap_or(3),
            room: RoomOptions::from_query(&get)?,
            game: get("mode").as_deref() == Some("game"),
            texture: get("source").as_deref() == Some("texture"),
            top_k: get("top_k").and_then(|k| k.parse().ok()),
            output_texture: get("output").as_deref() == Some("texture"),
            continuous: get("continuous").as_deref() == Some("1"),
        })
    }
}

/// Inputs fetched by the page, named.
#[derive(Resource)]
struct FetchedInputs(Receiver<Result<(String, Tensor), String>>);

/// Where the requests stand.
#[derive(Resource, Default)]
pub struct Progress {
    /// The inputs fetched so far, named.
    pub inputs: Vec<(String, Tensor)>,
    sent: usize,
    finished: usize,
    failed: usize,
    latencies_ms: Vec<f64>,
    /// Output textures still being read back.
    pub readbacks: usize,
}

/// Writes a JSON line to the console (for scripts) and a sentence to the page's status line.
pub fn report(line: serde_json::Value, status: &str) {
    web_sys::console::log_1(&line.to_string().into());
    set_status(status);
}

pub fn set_status(text: &str) {
    let element = web_sys::window().and_then(|w| w.document()).and_then(|d| d.get_element_by_id("status"));
    if let Some(element) = element {
        element.set_text_content(Some(text));
    }
}

/// Fetches `url` as bytes.
async fn fetch_bytes(url: &str) -> Result<Vec<u8>, String> {
    let window = web_sys::window().ok_or("no window")?;
    let response = JsFuture::from(window.fetch_with_str(url)).await.map_err(|e| format!("cannot fetch {url}: {e:?}"))?;
    let response: web_sys::Response = response.dyn_into().map_err(|_| format!("{url}: not a response"))?;
    if !response.ok() {
        return Err(format!("cannot fetch {url}: HTTP {}", response.status()));
    }
    let buffer = JsFuture::from(response.array_buffer().map_err(|e| format!("{url}: {e:?}"))?).await.map_err(|e| format!("{url}: {e:?}"))?;
    Ok(js_sys::Uint8Array::new(&buffer).to_vec())
}

/// A float32 `.npy` file as a tensor.
fn tensor_from_npy(url: &str, bytes: &[u8]) -> Result<Tensor, String> {
    let npy = npyz::NpyFile::new(bytes).map_err(|e| format!("{url}: {e}"))?;
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let data: Vec<f32> = npy.into_vec().map_err(|e| format!("{url}: {e}"))?;
    Tensor::new(shape, data).map_err(|e| format!("{url}: {e}"))
}

/// The first `rows` rows of `tensor` (all of them without a count).
fn first_rows(tensor: Tensor, rows: Option<usize>) -> Result<Tensor, String> {
    let Some(rows) = rows.filter(|&r| r < tensor.shape()[0]) else { return Ok(tensor) };
    let mut shape = tensor.shape().to_vec();
    let row: usize = shape[1..].iter().product();
    shape[0] = rows;
    Tensor::new(shape, tensor.data()[..rows * row].to_vec()).map_err(|e| e.to_string())
}

/// Fetches the page's inputs in the background; they arrive over `sender`.
fn fetch_inputs(options: &PageOptions, sender: Sender<Result<(String, Tensor), String>>) {
    let options = options.clone();
    wasm_bindgen_futures::spawn_local(async move {
        match &options.input {
            Some(url) => {
                let tensor = fetch_bytes(url).await.and_then(|bytes| tensor_from_npy(url, &bytes)).and_then(|t| first_rows(t, options.rows));
                let _ = sender.send(tensor.map(|t| (url.clone(), t)));
            }
            None => {
                for name in IMAGES {
                    let url = format!("assets/images/{name}.png");
                    let tensor = fetch_bytes(&url).await.and_then(|bytes| Tensor::from_image_bytes(&bytes, 1, 28, 28).map_err(|e| format!("{url}: {e}")));
                    let _ = sender.send(tensor.map(|t| (name.to_string(), t)));
                }
            }
        }
    });
}

/// Starts the app: the page's options, the inputs' fetches, and the web runner.
pub fn start() {
    let options = match PageOptions::from_query() {
        Ok(options) => options,
        Err(error) => {
            report(json!({"event": "page_error", "error": error}), &error);
            return;
        }
    };
    let (sender, receiver) = crossbeam_channel::unbounded();
    fetch_inputs(&options, sender);
    set_status("starting the renderer…");
    let mut app = App::new();
    let assets = AssetPlugin { meta_check: AssetMetaCheck::Never, ..default() };
    if options.game {
        if !crate::game::add_game(&mut app, assets) {
            report(json!({"event": "page_error", "error": "this build has no canvas: build the web example with --features canvas"}), "this build has no canvas");
            return;
        }
    } else {
        app.add_plugins(headless(assets));
    }
    app.add_plugins(P2pInferencePlugin::default())
        .insert_resource(FetchedInputs(receiver))
        .init_resource::<Progress>()
        .add_systems(Update, take_inputs);
    match options.room.clone() {
        None => {
            app.add_systems(Update, send_requests.after(take_inputs))
                .add_systems(Last, despawn_settled.before(InferenceSystems::ReceiveResults))
                .add_observer(on_prediction)
                .add_observer(on_failure);
        }
        Some(room) => {
            app.add_plugins(room.plugin(&options.model)).add_systems(Update, room::report_session);
            match room.role {
                PeerRole::Server => app.add_systems(Update, room::server_watch),
                PeerRole::Player | PeerRole::Spectator => app.init_resource::<room::AskerPhase>().add_systems(Update, room::coordinate.after(take_inputs)),
            };
            app.insert_resource(room);
        }
    }
    let game = options.game;
    app.insert_resource(options);
    if game {
        // bevy_winit's own web loop, which yields to the browser between frames.
        app.run();
    } else {
        app.set_runner(web_runner).run();
    }
}

/// Bevy's plugins without a window (nor bevy_winit, where the build has it).
fn headless(assets: AssetPlugin) -> impl PluginGroup {
    let plugins = headless_plugins().set(assets);
    #[cfg(feature = "canvas")]
    let plugins = plugins.disable::<bevy::winit::WinitPlugin>();
    plugins
}

/// The model's handle, loaded once.
#[derive(Resource)]
struct ModelHandle(Handle<Model>);

fn take_inputs(fetched: Res<FetchedInputs>, mut progress: ResMut<Progress>) {
    while let Ok(input) = fetched.0.try_recv() {
        match input {
            Ok(input) => progress.inputs.push(input),
            Err(error) => report(json!({"event": "failed", "error": error}), &error),
        }
    }
}

/// One request in flight at a time, the inputs in turn, until `requests` are sent.
fn send_requests(
    mut commands: Commands,
    options: Res<PageOptions>,
    mut progress: ResMut<Progress>,
    assets: Res<AssetServer>,
    mut images: ResMut<Assets<Image>>,
    model: Option<Res<ModelHandle>>,
) {
    let model = match model {
        Some(model) => model.0.clone(),
        None => {
            let handle: Handle<Model> = assets.load(options.model.clone());
            commands.insert_resource(ModelHandle(handle.clone()));
            handle
        }
    };
    let busy = progress.sent > progress.finished + progress.failed;
    if busy || progress.sent >= options.requests || progress.inputs.is_empty() {
        return;
    }
    let (name, input) = progress.inputs[progress.sent % progress.inputs.len()].clone();
    if let (true, Some((texture, preprocessing))) = (options.continuous, image_texture(&input)) {
        // One inference that keeps running: it counts as all the requests.
        commands.spawn((ContinuousInference::new(model, images.add(texture), preprocessing).every(2).in_flight(2), InputName(name)));
        progress.sent = options.requests;
        set_status("continuous inference running…");
        return;
    }
    let mut request = match (options.texture, image_texture(&input)) {
        (true, Some((texture, preprocessing))) => {
            commands.spawn((ImageInferenceRequest::new(model, images.add(texture), preprocessing), InputName(name)))
        }
        _ => commands.spawn((InferenceRequest::new(model, input.clone()), InputName(name))),
    };
    if let Some(k) = options.top_k {
        request.insert(ReadBackTopK(k));
    }
    if let (true, &[1, _, height, width]) = (options.output_texture, input.shape()) {
        request.insert(crate::output_texture::output_to_texture(&mut images, width as u32, height as u32));
    }
    progress.sent += 1;
    set_status(&format!("request {} of {}…", progress.sent, options.requests));
}

/// The input a request classifies.
#[derive(Component)]
struct InputName(String);

fn on_prediction(
    ready: On<PredictionReady>,
    mut commands: Commands,
    names: Query<&InputName>,
    targets: Query<&crate::output_texture::OutputTexture>,
    runs: Query<(), With<ContinuousRun>>,
    options: Res<PageOptions>,
    transfers: Res<GpuTransfers>,
    mut progress: ResMut<Progress>,
) {
    // A continuous inference's run: its prediction is reported on the inference's entity.
    if runs.contains(ready.entity) {
        return;
    }
    let name = names.get(ready.entity).map(|n| n.0.clone()).unwrap_or_default();
    if let Ok(target) = targets.get(ready.entity) {
        crate::output_texture::check_output_texture(&mut commands, target, name.clone(), ready.prediction.output.clone(), &mut progress);
    }
    let prediction = &ready.prediction;
    let latency_ms = prediction.latency.as_secs_f64() * 1e3;
    progress.finished += 1;
    progress.latencies_ms.push(latency_ms);
    let (class, probability) = prediction.top_k.first().copied().unwrap_or_default();
    report(
        json!({
            "event": "prediction",
            "request": progress.finished + progress.failed - 1,
            "input": name,
            "top_k": prediction.top_k,
            "latency_ms": latency_ms,
            "shape": prediction.output.shape(),
            "output": prediction.output.data(),
            "runs_in_flight": options.continuous.then(|| runs.iter().count()),
        }),
        &format!("{name}: class {class} ({:.1}%) in {latency_ms:.1} ms", probability * 100.0),
    );
    finish_when_done(&options, &progress, &transfers);
}

fn on_failure(failed: On<InferenceFailed>, options: Res<PageOptions>, transfers: Res<GpuTransfers>, mut progress: ResMut<Progress>) {
    progress.failed += 1;
    let error = failed.error.to_string();
    report(json!({"event": "failed", "kind": failure_kind(&failed.error), "error": error}), &format!("inference failed: {error}"));
    finish_when_done(&options, &progress, &transfers);
}

/// A stable name for why a request failed, for scripts.
fn failure_kind(error: &InferenceError) -> &'static str {
    match error {
        InferenceError::ModelLoad(_) => "model_load",
        InferenceError::Model(_) => "model",
        InferenceError::Gpu(_) => "gpu",
        _ => "other",
    }
}

/// Settled requests go a frame after they settled, once the inference history (which the
/// overlay shows) has recorded them.
fn despawn_settled(mut commands: Commands, settled: Query<Entity, (With<InputName>, Without<ContinuousInference>, Or<(With<Prediction>, With<InferenceFailed>)>)>) {
    for entity in &settled {
        commands.entity(entity).despawn();
    }
}

/// Reports `done` once every request has settled and every output texture was checked, with
/// what inference moved between the CPU and the GPU ([`GpuTransfers`]).
pub fn finish_when_done(options: &PageOptions, progress: &Progress, transfers: &GpuTransfers) {
    if progress.finished + progress.failed < options.requests || progress.readbacks > 0 {
        return;
    }
    let mut sorted = progress.latencies_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted.get(sorted.len() / 2).copied();
    report(
        json!({"event": "done", "requests": progress.finished, "failed": progress.failed, "median_ms": median, "transfers": transfers.totals()}),
        &format!("done: {} predictions, {} failed, median {:.1} ms", progress.finished, progress.failed, median.unwrap_or(f64::NAN)),
    );
}
