//! Requests on an image that is already on the GPU: preprocessed there, with no input uploaded,
//! giving the prediction of the same pixels read back and sent as a tensor; and images the
//! preprocessing cannot take failing with a typed error.

use std::time::Duration;

use bevy::asset::RenderAssetUsages;
use bevy::image::Image;
use bevy::prelude::*;
use bevy_p2p_inference::gpu::ImageInputError;
use bevy_p2p_inference::prelude::*;
use bevy_p2p_inference::tensor::preprocess::{ChannelOrder, ImageSize, PreprocessError, ResizeFilter, RgbaImage};
use bevy_p2p_inference::{update_until_prediction, GpuTransfers, InferenceError, TransferTotals, WaitError};

use crate::support::*;

/// Generous: lavapipe is slow.
const TIMEOUT: Duration = Duration::from_secs(120);

/// The shipped ankle boot scaled up three times (each pixel a 3x3 block), as the RGBA bytes
/// of an 84x84 sRGB image.
fn ankle_boot_84() -> (ImageSize, Vec<u8>) {
    let path = format!("{}/assets/images/ankle_boot.png", env!("CARGO_MANIFEST_DIR"));
    let decoded = image::open(path).unwrap().resize_exact(84, 84, image::imageops::FilterType::Nearest).to_rgba8();
    (ImageSize { width: 84, height: 84 }, decoded.into_raw())
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
    let cases: Vec<(ImageInferenceRequest, fn(&InferenceError) -> bool)> = vec![
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
