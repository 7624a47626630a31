//! `?output=texture`: each request's output is also written into a texture on the GPU by the
//! `image_output` kernel (an image-to-image model's two classes as a colour map), and the page
//! reads that texture back to compare it with the CPU reference of the same mapping applied to
//! the output tensor (`OutputMapping::apply`): `{"event": "output_texture", "input",
//! "texels", "max_difference", "classes"}`, one per request, before `done`.

use bevy::asset::RenderAssetUsages;
use bevy::prelude::*;
use bevy::render::gpu_readback::{Readback, ReadbackComplete};
use bevy::render::render_resource::{Extent3d, TextureDimension, TextureFormat, TextureUsages};
use bevy_p2p_inference::prelude::*;
use bevy_p2p_inference::GpuTransfers;
use bevy_p2p_inference::tensor::preprocess::TensorLayout;
use serde_json::json;

use crate::browser::{finish_when_done, report, PageOptions, Progress};

/// The colours of the two classes.
const PALETTE: [[f32; 4]; 2] = [[0.0, 0.0, 0.2, 1.0], [1.0, 0.6, 0.0, 1.0]];

/// The texture a request's output goes into.
#[derive(Component)]
pub struct OutputTexture {
    image: Handle<Image>,
    size: UVec2,
}

/// Where a request on a `width` x `height` image writes its output: a texture of that size, and
/// the tensor read back too, for the comparison.
pub fn output_to_texture(images: &mut Assets<Image>, width: u32, height: u32) -> (OutputToImage, OutputTexture) {
    let size = Extent3d { width, height, depth_or_array_layers: 1 };
    let mut target = Image::new_fill(size, TextureDimension::D2, &[0, 0, 0, 0], TextureFormat::Rgba8Unorm, RenderAssetUsages::RENDER_WORLD);
    target.texture_descriptor.usage |= TextureUsages::COPY_DST | TextureUsages::COPY_SRC;
    let image = images.add(target);
    let mapping = OutputMapping::ClassColours { palette: PALETTE.to_vec(), layout: TensorLayout::Nchw };
    (OutputToImage { image: image.clone(), mapping, read_back: true }, OutputTexture { image, size: UVec2::new(width, height) })
}

/// Reads back `target` (the texture of the request `name`, whose output is `output`) and
/// reports how it compares with the CPU reference.
pub fn check_output_texture(commands: &mut Commands, target: &OutputTexture, name: String, output: Tensor, progress: &mut Progress) {
    progress.readbacks += 1;
    let size = target.size;
    let observer = move |done: On<ReadbackComplete>, mut commands: Commands, options: Res<PageOptions>, transfers: Res<GpuTransfers>, mut progress: ResMut<Progress>, mut checked: Local<bool>| {
        // A readback repeats every frame until its entity goes: the first one counts.
        if std::mem::replace(&mut *checked, true) {
            return;
        }
        commands.entity(done.entity).despawn();
        progress.readbacks -= 1;
        let mapping = OutputMapping::ClassColours { palette: PALETTE.to_vec(), layout: TensorLayout::Nchw };
        let line = match mapping.apply(&output) {
            Ok(reference) => {
                let row = (size.x as usize * 4).next_multiple_of(256);
                let mut max_difference = 0.0f32;
                let mut classes = [0usize; 2];
                for (i, want) in reference.texels.iter().enumerate() {
                    let (x, y) = (i % size.x as usize, i / size.x as usize);
                    let texel = &done.data[y * row + 4 * x..y * row + 4 * x + 4];
                    for (got, want) in texel.iter().zip(want) {
                        max_difference = max_difference.max((*got as f32 / 255.0 - want).abs());
                    }
                    classes[usize::from(*want == PALETTE[1])] += 1;
                }
                json!({"event": "output_texture", "input": name, "texels": reference.texels.len(), "max_difference": max_difference, "classes": classes})
            }
            Err(error) => json!({"event": "failed", "error": error.to_string()}),
        };
        report(line, &format!("{name}: output texture read back"));
        finish_when_done(&options, &progress, &transfers);
    };
    commands.spawn(Readback::texture(target.image.clone())).observe(observer);
}
