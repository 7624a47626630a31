//! The parameters of the kernels at a model's edges: `image_input` (a texture into a model's
//! input), `image_output` (a model's output into a texture) and `top_k` (a classifier's output
//! down to what is read back).

use bytemuck::{Pod, Zeroable};

kernel_params! {
    /// A texture preprocessed into a model's input (`shaders/image_input.wgsl`), made from a
    /// [`crate::tensor::preprocess::PreprocessPlan`].
    ImageInputParams {
        /// The texture's columns.
        source_width: u32,
        /// The texture's rows.
        source_height: u32,
        /// Columns after resizing.
        resized_width: u32,
        /// Rows after resizing.
        resized_height: u32,
        /// The output's columns.
        output_width: u32,
        /// The output's rows.
        output_height: u32,
        /// The crop's first column in the resized image.
        crop_x: u32,
        /// The crop's first row in the resized image.
        crop_y: u32,
        /// 0 bilinear, 1 area.
        area: u32,
        /// 0 RGB, 1 BGR, 2 grey, 3 RGBA.
        channels: u32,
        /// 0 NCHW, 1 NHWC.
        nhwc: u32,
        /// 1 where the texture is sRGB (its texels are encoded again after loading).
        srgb: u32,
        /// 1 where the texture has one channel (grey is that channel).
        single_channel: u32,
        /// Multiplies each value first.
        scale: f32,
        /// Aligns `mean` to 16 bytes, as WGSL does.
        pad0: u32,
        /// Aligns `mean` to 16 bytes, as WGSL does.
        pad1: u32,
        /// Subtracted per channel.
        mean: [f32; 4],
        /// Divides per channel.
        deviation: [f32; 4],
    }
}

kernel_params! {
    /// A model output written as an RGBA image (`shaders/image_output.wgsl`), made from a
    /// [`crate::tensor::output_mapping::OutputMapping`] and the target texture's format.
    ImageOutputParams {
        /// The image's columns.
        width: u32,
        /// The image's rows.
        height: u32,
        /// The tensor's channels (classes for a colour map).
        channels: u32,
        /// 0 NCHW, 1 NHWC.
        nhwc: u32,
        /// 0 colours, 1 class colours.
        classes: u32,
        /// For colours: 0 RGB, 1 BGR, 2 grey, 3 RGBA.
        order: u32,
        /// 0 rgba8, 1 bgra8, 2 rgba16float, 3 rgba32float.
        texel_format: u32,
        /// 1 where the texture is sRGB.
        srgb: u32,
        /// u32 words per padded row of the copy.
        row_words: u32,
        /// Multiplies each value (colours).
        scale: f32,
        /// Added after scaling (colours).
        offset: f32,
        /// Pads the struct to 16 bytes.
        pad0: u32,
    }
}

kernel_params! {
    /// A classifier's top k taken on the GPU (`shaders/top_k.wgsl`), so that only k classes
    /// are read back.
    TopKParams {
        /// The logits of the first batch row.
        count: u32,
        /// The classes wanted.
        k: u32,
        /// Pads the struct to 16 bytes.
        pad0: u32,
        /// Pads the struct to 16 bytes.
        pad1: u32,
    }
}

kernel_params! {
    /// One class of a top k as the `top_k` kernel writes it (WGSL `ClassScore`).
    ClassScore {
        /// The class (`u32::MAX` where a round found none: fewer classes than k were numbers).
        class_index: u32,
        /// Its softmax probability over the row.
        probability: f32,
    }
}
