//! The parameter structs against their WGSL mirrors, parsed by naga.

use super::*;
use crate::gpu::kernel::KernelFamily;
use crate::gpu::library::{CAST, COMMON};
use crate::gpu::precision::StoragePrecision;

type Layout = (&'static str, &'static [(&'static str, usize)]);

/// The parameter struct each family binds as `p`.
fn params_of(family: KernelFamily) -> (Layout, usize) {
    match family {
        KernelFamily::Conv => (ConvParams::LAYOUT, size_of::<ConvParams>()),
        KernelFamily::Binary => (BinaryParams::LAYOUT, size_of::<BinaryParams>()),
        KernelFamily::Activation => (ActivationKernelParams::LAYOUT, size_of::<ActivationKernelParams>()),
        KernelFamily::ChannelAffine => (ChannelAffineParams::LAYOUT, size_of::<ChannelAffineParams>()),
        KernelFamily::GlobalAverage => (GlobalAverageParams::LAYOUT, size_of::<GlobalAverageParams>()),
        KernelFamily::Pool2d => (Pool2dParams::LAYOUT, size_of::<Pool2dParams>()),
        KernelFamily::Matmul => (GemmParams::LAYOUT, size_of::<GemmParams>()),
        KernelFamily::Concat => (ConcatCopyParams::LAYOUT, size_of::<ConcatCopyParams>()),
        KernelFamily::Softmax => (SoftmaxParams::LAYOUT, size_of::<SoftmaxParams>()),
        KernelFamily::StridedCopy => (StridedCopyParams::LAYOUT, size_of::<StridedCopyParams>()),
        KernelFamily::Reduce => (ReduceParams::LAYOUT, size_of::<ReduceParams>()),
        KernelFamily::LayerNorm => (LayerNormParams::LAYOUT, size_of::<LayerNormParams>()),
        KernelFamily::Gather => (GatherParams::LAYOUT, size_of::<GatherParams>()),
        KernelFamily::Select => (SelectParams::LAYOUT, size_of::<SelectParams>()),
        KernelFamily::ConvTranspose => (ConvTransposeParams::LAYOUT, size_of::<ConvTransposeParams>()),
        KernelFamily::Resize => (ResizeParams::LAYOUT, size_of::<ResizeParams>()),
        KernelFamily::Recurrent => (RecurrentParams::LAYOUT, size_of::<RecurrentParams>()),
        KernelFamily::Pad => (PadParams::LAYOUT, size_of::<PadParams>()),
    }
}

/// Parses `source` with naga and returns struct `name`'s members (name, byte offset) and size.
fn wgsl_struct(module: &naga::Module, name: &str) -> (Vec<(String, usize)>, usize) {
    let (_, ty) = module.types.iter().find(|(_, t)| t.name.as_deref() == Some(name)).unwrap_or_else(|| panic!("no WGSL struct {name}"));
    let naga::TypeInner::Struct { members, span } = &ty.inner else { panic!("{name} is not a struct") };
    (members.iter().map(|m| (m.name.clone().unwrap_or_default(), m.offset as usize)).collect(), *span as usize)
}

/// The name of the type of the global variable `p` (binding 0).
fn binding_zero_type(module: &naga::Module) -> String {
    let (_, p) = module.global_variables.iter().find(|(_, v)| v.name.as_deref() == Some("p")).expect("every family binds `p`");
    assert_eq!(p.binding, Some(naga::ResourceBinding { group: 0, binding: 0 }));
    module.types[p.ty].name.clone().unwrap_or_default()
}

fn owned(layout: Layout) -> Vec<(String, usize)> {
    layout.1.iter().map(|(n, o)| (n.to_string(), *o)).collect()
}

#[test]
fn every_family_binds_its_parameter_struct_with_the_rust_layout() {
    let prelude = StoragePrecision::F32.wgsl_prelude();
    for family in KernelFamily::ALL {
        let source = format!("{prelude}{COMMON}\n{}\n{}", family.source(), family.subgroup_source());
        let module = naga::front::wgsl::parse_str(&source).unwrap_or_else(|e| panic!("{family:?}: {}", e.emit_to_string(&source)));
        let (layout, size) = params_of(family);
        assert_eq!(binding_zero_type(&module), layout.0, "{family:?}");
        assert_eq!(wgsl_struct(&module, layout.0), (owned(layout), size), "{family:?}");
        assert_eq!(wgsl_struct(&module, "Activation"), (owned(ActivationParams::LAYOUT), size_of::<ActivationParams>()));
    }
    let cast = format!("{prelude}alias cast_from = f32;\nalias cast_to = elem;\n{COMMON}\n{CAST}");
    let module = naga::front::wgsl::parse_str(&cast).expect("cast.wgsl parses");
    assert_eq!(binding_zero_type(&module), "CastParams");
    assert_eq!(wgsl_struct(&module, "CastParams"), (owned(CastParams::LAYOUT), size_of::<CastParams>()));
    let image_input = crate::gpu::image_input::SHADER;
    let module = naga::front::wgsl::parse_str(image_input).expect("image_input.wgsl parses");
    assert_eq!(binding_zero_type(&module), "ImageInputParams");
    assert_eq!(wgsl_struct(&module, "ImageInputParams"), (owned(ImageInputParams::LAYOUT), size_of::<ImageInputParams>()));
    let module = naga::front::wgsl::parse_str(crate::gpu::image_output::SHADER).expect("image_output.wgsl parses");
    assert_eq!(binding_zero_type(&module), "ImageOutputParams");
    assert_eq!(wgsl_struct(&module, "ImageOutputParams"), (owned(ImageOutputParams::LAYOUT), size_of::<ImageOutputParams>()));
    let module = naga::front::wgsl::parse_str(crate::gpu::top_k::SHADER).expect("top_k.wgsl parses");
    assert_eq!(binding_zero_type(&module), "TopKParams");
    assert_eq!(wgsl_struct(&module, "TopKParams"), (owned(TopKParams::LAYOUT), size_of::<TopKParams>()));
    assert_eq!(wgsl_struct(&module, "ClassScore"), (owned(ClassScore::LAYOUT), size_of::<ClassScore>()));
}

#[test]
fn an_activation_is_encoded_as_its_code_and_arguments() {
    assert_eq!(ActivationParams::from(Activation::Clip { min: 0.0, max: 6.0 }), ActivationParams { code: 2, a: 0.0, b: 6.0 });
    assert_eq!(ActivationParams::from(Activation::HardSigmoid { alpha: 0.2, beta: 0.5 }), ActivationParams { code: 5, a: 0.2, b: 0.5 });
    assert_eq!(ActivationParams::from(Activation::Identity).code, 0);
}
