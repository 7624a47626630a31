//! Requests on an image that is already on the GPU: preprocessed there, with no input uploaded,
//! giving the prediction of the same pixels read back and sent as a tensor; and images the
//! preprocessing cannot take failing with a typed error; outputs written into textures.

use std::time::Duration;

use bevy::asset::RenderAssetUsages;
use bevy::image::Image;
use bevy::prelude::*;
use bevy_p2p_inference::gpu::{ImageInputError, ImageOutputError};
use bevy_p2p_inference::prelude::*;
use bevy_p2p_inference::tensor::preprocess::{ChannelOrder, ImageSize, PreprocessError, ResizeFilter, RgbaImage};
use bevy_p2p_inference::{update_until_prediction, GpuTransfers, InferenceError, TransferTotals, WaitError};

use crate::support::*;

/// Generous: lavapipe is slow.
const TIMEOUT: Duration = Duration::from_secs(120);

/// The shipped ankle boot scaled up three times (each pixel a 3x3 block), as the RGBA bytes
/// of an 84x84 sRGB image.
fn ankle_boot_84() -> (ImageSize, Vec<u8>) {
    (ImageSize { width: 84, height: 84 }, shipped_image_84("ankle_boot"))
}

/// An image asset as a game's render target would be: on the GPU, readable by shaders.
fn texture_image(size: ImageSize, bytes: Vec<u8>, format: bevy::render::render_resource::TextureFormat) -> Image {
    let extent = bevy::render::render_resource::Extent3d { width: size.width, height: size.height, depth_or_array_layers: 1 };
    let mut image = Image::new(extent, bevy::render::render_resource::TextureDimension::D2, bytes, format, RenderAssetUsages::all());
    image.texture_descriptor.usage |= bevy::render::render_resource::TextureUsages::RENDER_ATTACHMENT;
    image
}

/// The fashion model's preprocessing: area-resized to 28x28, grey.
fn fashion() -> ImagePreprocessing {
    ImagePreprocessing::resized(28, 28, ResizeFilter::Area, ChannelOrder::Gray)
}

fn totals(app: &App) -> TransferTotals {
    app.world().resource::<GpuTransfers>().totals()
}

#[test]
fn a_request_on_an_image_predicts_what_the_same_pixels_read_back_and_uploaded_predict_without_uploading_anything() {
    let mut app = app();
    let model: Handle<Model> = app.world().resource::<AssetServer>().load("models/fashion_mobilenetv2.onnx");
    let (size, bytes) = ankle_boot_84();
    let image = app.world_mut().resource_mut::<Assets<Image>>().add(texture_image(size, bytes.clone(), bevy::render::render_resource::TextureFormat::Rgba8UnormSrgb));

    let before = totals(&app);
    let on_gpu = app.world_mut().spawn(ImageInferenceRequest::new(model.clone(), image, fashion())).id();
    let (from_image, _) = update_until_prediction(&mut app, on_gpu, TIMEOUT).unwrap();
    let after_image = totals(&app);
    assert_eq!(after_image.tensor_uploads, before.tensor_uploads, "the image request uploaded an input");
    assert_eq!(after_image.image_inputs, before.image_inputs + 1);
    assert_eq!(after_image.readbacks, before.readbacks + 1, "only the output is read back");
    assert_eq!(after_image.readback_bytes, before.readback_bytes + 4 * 10, "ten logits");

    // The round trip a game makes without this: the pixels on the CPU, preprocessed there,
    // uploaded as a tensor.
    let input = fashion().apply(&RgbaImage::from_rgba8(size, &bytes).unwrap()).unwrap();
    let uploaded = app.world_mut().spawn(InferenceRequest::new(model, input)).id();
    let (from_tensor, _) = update_until_prediction(&mut app, uploaded, TIMEOUT).unwrap();
    let after_tensor = totals(&app);
    assert_eq!(after_tensor.tensor_uploads, after_image.tensor_uploads + 1);
    assert_eq!(after_tensor.tensor_upload_bytes, after_image.tensor_upload_bytes + 4 * 28 * 28);

    assert!(relative_error(&from_image.output, &from_tensor.output) <= 1e-4, "{:?} vs {:?}", from_image.output.data(), from_tensor.output.data());
    assert_eq!(from_image.top_k[0].0, 9, "an ankle boot is class 9");
    assert_eq!(from_image.top_k[0].0, from_tensor.top_k[0].0);
}

/// What a bad image request's failure must match.
type ExpectedError = fn(&InferenceError) -> bool;

#[test]
fn images_the_preprocessing_or_the_model_cannot_take_fail_with_a_typed_error() {
    use bevy::render::render_resource::TextureFormat as F;
    let mut app = app();
    let model: Handle<Model> = app.world().resource::<AssetServer>().load("models/fashion_mobilenetv2.onnx");
    let size = ImageSize { width: 30, height: 30 };
    let mut images = app.world_mut().resource_mut::<Assets<Image>>();
    let integer = images.add(texture_image(size, vec![0; 30 * 30 * 4], F::R32Uint));
    let two_channels = images.add(texture_image(size, vec![0; 30 * 30 * 2], F::Rg8Unorm));
    let rgba = images.add(texture_image(size, vec![0; 30 * 30 * 4], F::Rgba8Unorm));
    let mut cpu_only = texture_image(size, vec![0; 30 * 30 * 4], F::Rgba8Unorm);
    cpu_only.asset_usage = RenderAssetUsages::MAIN_WORLD;
    let cpu_only = images.add(cpu_only);
    let removed = images.add(texture_image(size, vec![0; 30 * 30 * 4], F::Rgba8Unorm));
    images.remove(removed.id());

    let cropped = ImagePreprocessing { center_crop: Some(ImageSize { width: 28, height: 40 }), ..fashion() };
    let colour = ImagePreprocessing::resized(28, 28, ResizeFilter::Bilinear, ChannelOrder::Rgb);
    let cases: Vec<(ImageInferenceRequest, ExpectedError)> = vec![
        (ImageInferenceRequest::new(model.clone(), integer, fashion()), |e| matches!(e, InferenceError::ImageInput(ImageInputError::UnsupportedFormat { format: F::R32Uint }))),
        (ImageInferenceRequest::new(model.clone(), two_channels, colour.clone()), |e| matches!(e, InferenceError::ImageInput(ImageInputError::TooFewChannels { has: 2, needs: 3, .. }))),
        (ImageInferenceRequest::new(model.clone(), rgba.clone(), cropped), |e| matches!(e, InferenceError::ImageInput(ImageInputError::Preprocess(PreprocessError::CropOutside { .. })))),
        (ImageInferenceRequest::new(model.clone(), cpu_only, fashion()), |e| matches!(e, InferenceError::ImageInput(ImageInputError::NotReadable(_)))),
        (ImageInferenceRequest::new(model.clone(), removed, fashion()), |e| matches!(e, InferenceError::ImageLoad(_))),
        // Three channels into a one-channel model: the block does not compile for the shape.
        (ImageInferenceRequest::new(model, rgba, colour), |e| matches!(e, InferenceError::Gpu(_))),
    ];
    for (request, expected) in cases {
        let description = format!("{:?}", request.preprocessing);
        let entity = app.world_mut().spawn(request).id();
        match update_until_prediction(&mut app, entity, TIMEOUT) {
            Err(WaitError::Failed(error)) => assert!(expected(&error), "{description}: {error:?}"),
            other => panic!("{description}: {other:?}"),
        }
        assert!(app.world().get::<Prediction>(entity).is_none());
    }
}

/// The zoo's small U-Net (two classes per pixel), exported with a dynamic batch as a game would
/// export it: it runs on one image.
fn unet() -> Model {
    Model::from_onnx_bytes(&model_bytes("tests/fixtures/zoo/unet_small_dynamic_batch.onnx")).unwrap()
}

#[test]
fn a_segmentation_of_an_image_is_written_into_a_texture_as_a_colour_map_without_leaving_the_gpu() {
    use bevy::render::render_resource::{TextureFormat as F, TextureUsages};
    use bevy_p2p_inference::model::run_reference;
    use bevy_p2p_inference::tensor::preprocess::TensorLayout;
    use rand::{Rng, SeedableRng};

    let mut app = app();
    let model = app.world_mut().resource_mut::<Assets<Model>>().add(unet());
    // A 64x64 input of smooth colour gradients, so that the two classes both cover areas.
    let mut rng = rand::rngs::StdRng::seed_from_u64(31);
    let phase: [f32; 3] = std::array::from_fn(|_| rng.random_range(0.0..6.0));
    let size = ImageSize { width: 64, height: 64 };
    let pixels: Vec<u8> = (0..64 * 64)
        .flat_map(|i| {
            let (x, y) = ((i % 64) as f32 / 9.0, (i / 64) as f32 / 7.0);
            let channel = |c: usize| ((x * (c as f32 + 1.0) + y + phase[c]).sin() * 127.5 + 127.5) as u8;
            [channel(0), channel(1), channel(2), 255]
        })
        .collect();
    let mut images = app.world_mut().resource_mut::<Assets<Image>>();
    let source = images.add(texture_image(size, pixels.clone(), F::Rgba8UnormSrgb));
    let mut target = texture_image(size, vec![0; 64 * 64 * 4], F::Rgba8Unorm);
    target.texture_descriptor.usage |= TextureUsages::COPY_SRC;
    let target = images.add(target);

    let palette = vec![[1.0, 0.2, 0.0, 1.0], [0.0, 0.4, 1.0, 1.0]];
    let mapping = OutputMapping::ClassColours { palette: palette.clone(), layout: TensorLayout::Nchw };
    let before = totals(&app);
    let request = app
        .world_mut()
        .spawn((ImageInferenceRequest::new(model.clone(), source, ImagePreprocessing::default()), OutputToImage { image: target.clone(), mapping, read_back: true }))
        .id();
    let (prediction, _) = update_until_prediction(&mut app, request, TIMEOUT).unwrap();
    let after = totals(&app);
    assert_eq!(after.tensor_uploads, before.tensor_uploads, "nothing uploaded");
    assert_eq!(after.readback_bytes - before.readback_bytes, 4 * 2 * 64 * 64, "only the asked-for output read back");

    // The same pixels through the CPU reference: preprocessing, model, colour map.
    let input = ImagePreprocessing::default().apply(&RgbaImage::from_rgba8(size, &pixels).unwrap()).unwrap();
    let graph = app.world().resource::<Assets<Model>>().get(&model).unwrap().graph_for(input.shape()).unwrap();
    let reference = run_reference(&graph, &input).unwrap();
    assert!(relative_error(&prediction.output, &reference) <= 1e-4);
    assert!(prediction.gpu.is_some());
    let texels: Vec<[u8; 4]> = read_texture(&mut app, target, 64).chunks_exact(4).map(|t| [t[0], t[1], t[2], t[3]]).collect();
    let classes: Vec<usize> = (0..64 * 64).map(|i| usize::from(reference.data()[64 * 64 + i] > reference.data()[i])).collect();
    assert!(classes.contains(&0) && classes.contains(&1), "both classes appear");
    let mut compared = 0;
    for (i, texel) in texels.iter().enumerate() {
        // Pixels whose two logits are closer than the GPU's rounding may go either way.
        if (reference.data()[64 * 64 + i] - reference.data()[i]).abs() < 1e-3 {
            continue;
        }
        let want = palette[classes[i]].map(|v| (v * 255.0).round() as u8);
        assert_eq!(*texel, want, "pixel {i}");
        compared += 1;
    }
    assert!(compared > 64 * 64 * 9 / 10, "{compared} pixels compared");
}

#[test]
fn without_read_back_the_output_stays_on_the_gpu_and_the_prediction_is_empty() {
    use bevy::render::render_resource::TextureFormat as F;
    let mut app = app();
    let model = app.world_mut().resource_mut::<Assets<Model>>().add(unet());
    let size = ImageSize { width: 64, height: 64 };
    let mut images = app.world_mut().resource_mut::<Assets<Image>>();
    let source = images.add(texture_image(size, vec![90; 64 * 64 * 4], F::Rgba8Unorm));
    let target = images.add(texture_image(size, vec![0; 64 * 64 * 4], F::Rgba8Unorm));
    let wrong_size = images.add(texture_image(ImageSize { width: 32, height: 32 }, vec![0; 32 * 32 * 4], F::Rgba8Unorm));
    let colour_map = OutputMapping::ClassColours { palette: vec![[0.0; 4], [1.0; 4]], layout: bevy_p2p_inference::tensor::preprocess::TensorLayout::Nchw };

    let before = totals(&app);
    let request = app.world_mut().spawn((ImageInferenceRequest::new(model.clone(), source.clone(), ImagePreprocessing::default()), OutputToImage::new(target, colour_map.clone()))).id();
    let (prediction, _) = update_until_prediction(&mut app, request, TIMEOUT).unwrap();
    assert_eq!(prediction.output.shape(), &[0]);
    // Lavapipe writes timestamps: the GPU time comes back even without the output.
    assert!(prediction.gpu.is_some_and(|gpu| gpu > Duration::ZERO && gpu <= prediction.latency), "{:?}", prediction.gpu);
    assert_eq!(totals(&app).readback_bytes, before.readback_bytes, "nothing read back");

    let request = app.world_mut().spawn((ImageInferenceRequest::new(model, source, ImagePreprocessing::default()), OutputToImage::new(wrong_size, colour_map))).id();
    let result = update_until_prediction(&mut app, request, TIMEOUT);
    assert!(
        matches!(result, Err(WaitError::Failed(InferenceError::ImageOutput(ImageOutputError::SizeDiffers { .. })))),
        "{result:?}"
    );
}

/// `name` from the shipped images scaled up three times, as the RGBA bytes of an 84x84 image.
fn shipped_image_84(name: &str) -> Vec<u8> {
    let path = format!("{}/assets/images/{name}.png", env!("CARGO_MANIFEST_DIR"));
    image::open(path).unwrap().resize_exact(84, 84, image::imageops::FilterType::Nearest).to_rgba8().into_raw()
}

#[test]
fn a_continuous_inference_follows_what_the_image_shows_with_at_most_k_runs_in_flight_and_each_run_is_in_the_history() {
    use bevy::render::render_resource::TextureFormat as F;
    use bevy_p2p_inference::{Cadence, ContinuousRun, ContinuousRuns, InferenceDiagnosticsPlugin, InferenceHistory};

    #[derive(Resource, Default)]
    struct Seen(Vec<usize>);
    let mut app = App::new();
    app.add_plugins((bevy_p2p_inference::headless_plugins(), P2pInferencePlugin::default(), InferenceDiagnosticsPlugin::default()));
    app.finish();
    app.cleanup();
    app.init_resource::<Seen>();
    let model: Handle<Model> = app.world().resource::<AssetServer>().load("models/fashion_mobilenetv2.onnx");
    let size = ImageSize { width: 84, height: 84 };
    let image = app.world_mut().resource_mut::<Assets<Image>>().add(texture_image(size, shipped_image_84("ankle_boot"), F::Rgba8UnormSrgb));
    let camera = app
        .world_mut()
        .spawn(ContinuousInference::new(model, image.clone(), fashion()).every(2).in_flight(1).top_k(3))
        .observe(|ready: On<PredictionReady>, mut seen: ResMut<Seen>| seen.0.push(ready.prediction.top_k[0].0))
        .id();

    let deadline = std::time::Instant::now() + TIMEOUT;
    let mut swapped = false;
    while app.world().resource::<Seen>().0.iter().rev().take(2).filter(|class| **class == 7).count() < 2 {
        app.update();
        let in_flight = app.world_mut().query::<&ContinuousRun>().iter(app.world()).count();
        assert!(in_flight <= 1, "{in_flight} runs in flight");
        // Once it has seen the ankle boot three times, the scene shows a sneaker.
        if !swapped && app.world().resource::<Seen>().0.len() >= 3 {
            let mut images = app.world_mut().resource_mut::<Assets<Image>>();
            images.get_mut(&image).unwrap().data = Some(shipped_image_84("sneaker"));
            swapped = true;
        }
        assert!(std::time::Instant::now() < deadline, "saw {:?}", app.world().resource::<Seen>().0);
    }
    let seen = &app.world().resource::<Seen>().0;
    assert!(seen[..3].iter().all(|class| *class == 9), "an ankle boot is class 9: {seen:?}");
    assert_eq!(seen.last(), Some(&7), "a sneaker is class 7");
    let runs = app.world().get::<ContinuousRuns>(camera).unwrap();
    assert_eq!(runs.finished as usize, seen.len());
    assert!(runs.started >= runs.finished && runs.started <= runs.finished + 1);
    let latest = app.world().get::<Prediction>(camera).expect("the latest prediction is on the entity");
    assert_eq!((latest.top_k.len(), latest.output.data().len()), (3, 0), "only the top 3 were read back");

    // No more runs; the one in flight lands, and every run is in the history once.
    app.world_mut().get_mut::<ContinuousInference>(camera).unwrap().cadence = Cadence::OnDemand;
    while app.world().get::<ContinuousRuns>(camera).is_some_and(|runs| runs.started > runs.finished) {
        app.update();
        assert!(std::time::Instant::now() < deadline, "the last run did not land");
    }
    app.update();
    let seen = app.world().resource::<Seen>().0.clone();
    let history = app.world().resource::<InferenceHistory>();
    assert_eq!(history.total() as usize, seen.len());
    assert_eq!(history.entries().last().map(|e| e.top_k[0].0), seen.last().copied());
}

#[test]
fn a_continuous_inference_whose_run_fails_stops_with_the_error() {
    use bevy::render::render_resource::TextureFormat as F;
    use bevy_p2p_inference::ContinuousRuns;

    let mut app = app();
    let model: Handle<Model> = app.world().resource::<AssetServer>().load("models/fashion_mobilenetv2.onnx");
    let size = ImageSize { width: 30, height: 30 };
    let image = app.world_mut().resource_mut::<Assets<Image>>().add(texture_image(size, vec![0; 30 * 30 * 4], F::R32Uint));
    let camera = app.world_mut().spawn(ContinuousInference::new(model, image, fashion())).id();
    for _ in 0..10 {
        app.update();
    }
    let failed = app.world().get::<InferenceFailed>(camera).expect("the failure is on the entity");
    assert!(matches!(failed.error, InferenceError::ImageInput(ImageInputError::UnsupportedFormat { .. })), "{:?}", failed.error);
    assert_eq!(app.world().get::<ContinuousRuns>(camera).unwrap().started, 1, "no run after the failure");
}
