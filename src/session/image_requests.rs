//! Image requests in a peer session: an [`ImageInferenceRequest`] for the split model runs its
//! stage 0 on this player's GPU, where the image is (the pixels are preprocessed there and
//! never read back), and its later stages are placed as any request's: the activation after
//! stage 0 is what travels. A rerun starts from the last activation this player holds, never
//! from the image again.

use bevy::image::Image;
use bevy::prelude::*;

use super::state::Tracked;
use super::Distributed;
use crate::job::ImageJobInput;
use crate::schedule::image_request::{image_job_input, ImageInferenceRequest};
use crate::schedule::request_output::OutputNotKeptOnGpu;
use crate::schedule::{InferenceFailed, LocalOnly, SplitRequest, Submitted};

/// Image requests neither handed out, failed, claimed by the pipeline, nor pinned to this
/// player (by [`LocalOnly`], or by an output kept on this GPU).
type UnclaimedImageRequest = (Without<Submitted>, Without<SplitRequest>, Without<InferenceFailed>, Without<LocalOnly>, OutputNotKeptOnGpu);

impl Distributed {
    /// Puts the image request of `entity` into the pipeline: its stage 0 reads `image` here.
    fn admit_image(&mut self, entity: Entity, image: ImageJobInput) {
        let id = self.take_request_id();
        self.pipeline.submit_on_this_gpu(id, image.plan.output_shape());
        self.tracked.insert(id, Tracked { entity, bytes: 0, part: None, image: Some(image) });
    }
}

/// Claims image requests for the split model whose image is loaded and can be preprocessed
/// as they say, so that the single-peer path leaves them to the pipeline.
pub(super) fn claim_image_requests(
    mut commands: Commands,
    mut state: ResMut<Distributed>,
    requests: Query<(Entity, &ImageInferenceRequest), UnclaimedImageRequest>,
    images: Res<Assets<Image>>,
    server: Res<AssetServer>,
) {
    if !state.settings.role.asks() || state.stage_count() == 0 {
        return;
    }
    for (entity, request) in &requests {
        if request.model.id() != state.model.id() {
            continue;
        }
        let Some(image) = image_job_input(&mut commands, entity, request, &images, &server) else { continue };
        state.admit_image(entity, image);
        commands.entity(entity).insert((SplitRequest, Submitted));
    }
}
