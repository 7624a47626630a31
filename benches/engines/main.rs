//! Latency at batch 1 and throughput at batch 64 for the shipped and synthetic models: this
//! crate on the GPU (submit-to-done, and end-to-end request-to-prediction in a headless Bevy
//! app) beside ONNX Runtime and tract on the CPU (and optionally PyTorch on CUDA), on the same
//! inputs in the same run.
//!
//! ```text
//! cargo bench --bench engines            # needs python3 with numpy and onnxruntime for ORT
//! BENCH_SECONDS=2 cargo bench --bench engines
//! BENCH_TORCH=1 cargo bench --bench engines   # adds PyTorch eager on CUDA (tools/bench_torch.py)
//! BENCH_PROFILE=1 cargo bench --bench engines # adds per-kernel GPU times under the table
//! BENCH_PROFILE=1 BENCH_PROFILE_DISPATCHES=1 cargo bench --bench engines # and each dispatch's
//! BENCH_MODELS=ImageNet cargo bench --bench engines   # only the models whose name contains it
//! BENCH_BATCHES=1 cargo bench --bench engines   # only these batch sizes (comma-separated)
//! cargo bench --features bench-tract --bench engines   # fills the tract column
//! ```

mod baselines;
mod bevy_app;
mod statistics;

use std::sync::Arc;
use std::time::Instant;

use bevy::prelude::*;
use bevy_p2p_inference::gpu::{
    gpu_time, profile_dispatches, request_device, run_blocking, DispatchTime, GpuBlock, Kernel, KernelLibrary, KernelOptions, ResidentWeights,
    StoragePrecision,
};
use bevy_p2p_inference::model::import_onnx_for_input;
use bevy_p2p_inference::prelude::*;

use baselines::*;
use bevy_app::*;
use statistics::*;

/// Name, file and the shape of one batch row. The transformers (random weights, tiny configs
/// from `tools/make_model_zoo.py`) are exported with a dynamic batch; GPT-2's input is 8 token
/// ids (the pattern's values round to ids 0 and 1).
const MODELS: [(&str, &str, &[usize]); 5] = [
    ("fashion (shipped)", "assets/models/fashion_mobilenetv2.onnx", &[1, 28, 28]),
    ("MobileNetV2 CIFAR (synthetic)", "assets/models/mobilenetv2_cifar_synthetic.onnx", &[3, 32, 32]),
    ("MobileNetV2 ImageNet (synthetic)", "assets/models/mobilenetv2_imagenet_synthetic.onnx", &[3, 224, 224]),
    ("ViT tiny (transformers)", "tests/fixtures/zoo/vit_tiny_dynamic_batch.onnx", &[3, 32, 32]),
    ("GPT-2 tiny (transformers)", "tests/fixtures/zoo/gpt2_tiny_dynamic_batch.onnx", &[8]),
];

/// Where the host's time goes in one submission of `block` outside Bevy (medians after a warm-up):
/// filling a fresh upload buffer and a re-mapped one, recording the commands, the `submit` call,
/// and the wait until the readback is mapped (GPU work plus wake-up).
fn print_submission_costs(device: &wgpu::Device, queue: &wgpu::Queue, library: &KernelLibrary, block: &GpuBlock, x: &Tensor, name: &str, batch: usize) {
    let mut phases = [(); 4].map(|_| Vec::new());
    for _ in 0..51 {
        let t0 = Instant::now();
        let upload = block.upload_input(device, x);
        let readback = block.create_readback(device);
        let t1 = Instant::now();
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
        block.encode(library, &mut encoder, &upload, &readback);
        let commands = encoder.finish();
        let t2 = Instant::now();
        queue.submit([commands]);
        let t3 = Instant::now();
        readback.slice(..).map_async(wgpu::MapMode::Read, |_| {});
        let _ = device.poll(wgpu::PollType::wait_indefinitely());
        let t4 = Instant::now();
        for (phase, (from, to)) in phases.iter_mut().zip([(t0, t1), (t1, t2), (t2, t3), (t3, t4)]) {
            phase.push((to - from).as_secs_f64() * 1e3);
        }
    }
    // Filling an upload buffer that has been mapped for writing again, as the render world's
    // pool does: with the library's copy, and with one thread's.
    let upload = block.upload_input(device, x);
    let time_refill = |fill: &dyn Fn(&wgpu::Buffer)| {
        let mut times = Vec::new();
        for _ in 0..11 {
            upload.slice(..).map_async(wgpu::MapMode::Write, |_| {});
            let _ = device.poll(wgpu::PollType::wait_indefinitely());
            let t = Instant::now();
            fill(&upload);
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        times
    };
    let refills = time_refill(&|upload| GpuBlock::fill_upload(upload, x));
    let single_thread = time_refill(&|upload| {
        upload.slice(..).get_mapped_range_mut().copy_from_slice(bytemuck::cast_slice(x.data()));
        upload.unmap();
    });
    let median_after_warmup = |mut times: Vec<f64>| median_p95(&mut times[1..]).map_or(f64::NAN, |(median, _)| median);
    let [fill, record, submit, wait] = phases.map(median_after_warmup);
    let (refill, single_thread) = (median_after_warmup(refills), median_after_warmup(single_thread));
    println!(
        "host side of one submission, {name} batch {batch} (ms): upload into a new buffer {fill:.3}, into a re-mapped one {refill:.3} ({single_thread:.3} on one thread), record {record:.3}, submit {submit:.3}, wait until mapped {wait:.3}"
    );
}

/// Per-kernel totals of one profiled run, printed under the table.
fn print_profile(name: &str, batch: usize, profile: &[DispatchTime], whole_ms: f64) {
    let mut by_kernel: Vec<(Kernel, usize, f64)> = Vec::new();
    for d in profile {
        let ms = d.time.as_secs_f64() * 1e3;
        match by_kernel.iter_mut().find(|(k, _, _)| *k == d.kernel) {
            Some(entry) => {
                entry.1 += 1;
                entry.2 += ms;
            }
            None => by_kernel.push((d.kernel, 1, ms)),
        }
    }
    by_kernel.sort_by(|a, b| b.2.total_cmp(&a.2));
    let sum: f64 = by_kernel.iter().map(|e| e.2).sum();
    println!("\nprofile {name}, batch {batch}: {} dispatches, {sum:.3} ms in separate passes ({whole_ms:.3} ms in one pass)", profile.len());
    for (kernel, count, ms) in by_kernel {
        println!("  {kernel:?}: {count} dispatches, {ms:.3} ms ({:.0}%)", 100.0 * ms / sum);
    }
    if std::env::var_os("BENCH_PROFILE_DISPATCHES").is_some() {
        for d in profile {
            println!("    {:?} {:?}: {:.3} ms", d.kernel, d.workgroups, d.time.as_secs_f64() * 1e3);
        }
    }
}

fn input(batch: usize, chw: &[usize]) -> Tensor {
    let n = batch * chw.iter().product::<usize>();
    // A fixed pseudo-random pattern in [0, 1): the same bytes go to every engine.
    let data = (0..n).map(|i| ((i as u64).wrapping_mul(2654435761) % 1000) as f32 / 1000.0).collect();
    Tensor::new([vec![batch], chw.to_vec()].concat(), data).unwrap()
}

fn cell(r: &Result<(f64, f64), String>, batch: usize) -> String {
    match r {
        Ok((median, p95)) if batch == 1 => format!("{median:.3} ms (p95 {p95:.3})"),
        Ok((median, _)) => format!("{median:.1} ms ({:.0} img/s)", batch as f64 * 1e3 / median),
        Err(e) => format!("n/a: {e}"),
    }
}

fn main() {
    let seconds: f64 = std::env::var("BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let (device, queue, info) = request_device().expect("a wgpu adapter");
    let library = KernelLibrary::new(&device);
    let plain_library = KernelLibrary::with_options(&device, KernelOptions { subgroups: false, ..default() });
    let half_library = KernelLibrary::with_options(&device, KernelOptions { storage: StoragePrecision::F16, ..default() });
    let checked_library = KernelLibrary::with_options(&device, KernelOptions { loop_guards: true, bounds_checks: true, ..default() });
    let tmp = std::env::temp_dir().join(format!("bench-engines-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();

    let mut app = bench_app(true);
    let mut unpipelined = bench_app(false);

    println!("adapter: {} ({:?}, {})", info.name, info.backend, info.driver_info);
    // What one frame of the headless app costs with no request in flight: the floor under the
    // end-to-end column, which needs at least two frames (submit, then receive); and the same
    // app without this crate's plugin, sampled in turn with it.
    let mut bevy_alone = bevy_alone_app();
    let idle = idle_frames(&mut [&mut app, &mut bevy_alone], 1.0);
    drop(bevy_alone);
    for (what, frame) in ["idle frame of the headless Bevy app", "idle frame of Bevy alone (the same app without this crate's plugin)"].into_iter().zip(idle) {
        if let Ok((median, p95)) = frame {
            println!("{what}: {median:.3} ms (p95 {p95:.3})");
        }
    }
    let with_torch = std::env::var_os("BENCH_TORCH").is_some();
    let with_profile = std::env::var_os("BENCH_PROFILE").is_some();
    let mut profiles = Vec::new();
    let mut header = vec![
        "model", "batch", "this crate, GPU time (timestamps)", "GPU time without subgroup variants", "GPU time with f16 storage", "GPU time with naga's loop guards and bounds checks",
        "f16 storage: output's relative error", "this crate, GPU submit-to-done",
        "this crate, end-to-end in Bevy (to PredictionReady)", "(to the end of that frame)", "frames",
        "readback to main world", "end-to-end without pipelined rendering (to PredictionReady)", "frames", "this crate, end-to-end in Bevy, 2 in flight (per request)", "ONNX Runtime CPU", "tract CPU",
    ];
    if with_torch {
        header.extend(["PyTorch eager CUDA", "PyTorch CUDA graph, GPU only", "e2e (to PredictionReady) / eager", "GPU time / CUDA graph"]);
    }
    println!("| {} |", header.join(" | "));
    println!("|{}", "---|".repeat(header.len()));
    let only = std::env::var("BENCH_MODELS").unwrap_or_default();
    let batches: Vec<usize> = match std::env::var("BENCH_BATCHES") {
        Ok(list) => list.split(',').map(|b| b.trim().parse().expect("BENCH_BATCHES: comma-separated batch sizes")).collect(),
        Err(_) => vec![1, 64],
    };
    for (name, path, chw) in MODELS.into_iter().filter(|(name, _, _)| name.contains(only.as_str())) {
        let bytes = std::fs::read(path).unwrap();
        let handle = app.world_mut().resource_mut::<Assets<Model>>().add(Model::from_onnx_bytes(&bytes).unwrap());
        let unpipelined_handle = unpipelined.world_mut().resource_mut::<Assets<Model>>().add(Model::from_onnx_bytes(&bytes).unwrap());
        for &batch in &batches {
            let x = input(batch, chw);
            // A model exported with a dynamic batch has a graph per input shape.
            let graph = import_onnx_for_input(&bytes, x.shape()).unwrap();
            let weights = Arc::new(ResidentWeights::upload(&device, &library, &graph).unwrap());
            let half_weights = Arc::new(ResidentWeights::upload(&device, &half_library, &graph).unwrap());
            let npy = tmp.join(format!("x{batch}.npy"));
            save_npy(&npy, &x);
            let block = GpuBlock::new(&device, &library, weights.clone(), &graph, x.shape()).map_err(|e| e.to_string());
            let submit_to_done = block
                .as_ref()
                .map_err(Clone::clone)
                .and_then(|block| time_it(seconds, || run_blocking(&device, &queue, &library, block, &x).map(|_| ()).map_err(|e| e.to_string())));
            // GPU time, and the same with two variants of the kernels: those that sum with subgroup
            // operations replaced by their workgroup-memory versions, and tensors stored as f16.
            // All are sampled in turn, so that a change of the GPU's clocks during the
            // measurement hits them alike.
            let variant = |available: bool, library: &KernelLibrary, weights: &Arc<ResidentWeights>, missing: &str| {
                if !available {
                    return Err(missing.to_string());
                }
                GpuBlock::new(&device, library, weights.clone(), &graph, x.shape()).map_err(|e| e.to_string())
            };
            let variant_libraries = [&plain_library, &half_library, &checked_library];
            let variants = [
                variant(library.uses_subgroups(), &plain_library, &weights, "no subgroups on this device"),
                variant(half_library.storage() == StoragePrecision::F16, &half_library, &half_weights, "no SHADER_F16 on this device"),
                variant(true, &checked_library, &weights, ""),
            ];
            let gpu_ms = |library: &KernelLibrary, block: &GpuBlock| {
                gpu_time(&device, &queue, library, block, &x).map(|t| t.as_secs_f64() * 1e3).map_err(|e| e.to_string())
            };
            let (timestamps, variant_times) = match &block {
                Ok(block) => {
                    let mut samples = vec![Vec::new(); variants.len()];
                    let sampled = sample_for(seconds, || {
                        for ((variant, library), samples) in variants.iter().zip(variant_libraries).zip(&mut samples) {
                            if let Ok(block) = variant {
                                samples.push(gpu_ms(library, block)?);
                            }
                        }
                        gpu_ms(&library, block)
                    });
                    // The first sample is the warm-up, as in `sample_for`.
                    let times: Vec<_> = variants
                        .iter()
                        .zip(samples)
                        .map(|(variant, mut samples)| variant.as_ref().map_err(Clone::clone).and_then(|_| median_p95(samples.get_mut(1..).unwrap_or_default())))
                        .collect();
                    (sampled, times)
                }
                Err(e) => (Err(e.clone()), vec![Err(e.clone()); variants.len()]),
            };
            let half_error = match (&block, &variants[1]) {
                (Ok(block), Ok(half_block)) => {
                    let want = run_blocking(&device, &queue, &library, block, &x);
                    let got = run_blocking(&device, &queue, &half_library, half_block, &x);
                    match (got, want) {
                        (Ok(got), Ok(want)) => format!("{:.1e}", relative_error(&got, &want)),
                        (Err(e), _) | (_, Err(e)) => format!("n/a: {e}"),
                    }
                }
                _ => "-".into(),
            };
            if let (true, Ok(block), Ok((whole, _))) = (with_profile, &block, &timestamps) {
                match profile_dispatches(&device, &queue, &library, block, &x) {
                    Ok(profile) => profiles.push((name.to_string(), batch, profile, *whole)),
                    Err(e) => println!("no profile for {name}: {e}"),
                }
            }
            for (index, label) in [(1, "f16 storage"), (2, "with naga's loop guards and bounds checks")] {
                if let (true, Ok(block), Ok((whole, _))) = (with_profile, &variants[index], &variant_times[index]) {
                    match profile_dispatches(&device, &queue, variant_libraries[index], block, &x) {
                        Ok(profile) => profiles.push((format!("{name}, {label}"), batch, profile, *whole)),
                        Err(e) => println!("no profile for {name}, {label}: {e}"),
                    }
                }
            }
            let e2e = end_to_end(&mut app, &handle, &x, seconds);
            let e2e_unpipelined = end_to_end(&mut unpipelined, &unpipelined_handle, &x, seconds);
            let in_flight = match pipelined(&mut app, &handle, &x, 2, seconds) {
                Ok(ms) => format!("{ms:.3} ms ({:.0} img/s)", batch as f64 * 1e3 / ms),
                Err(e) => format!("n/a: {e}"),
            };
            if with_profile {
                print_frame_costs(&mut app, &handle, &x, name, batch);
                if let Ok(block) = &block {
                    print_submission_costs(&device, &queue, &library, block, &x, name, batch);
                }
            }
            let cpu = ort(path, &npy, seconds);
            let tract_cpu = tract(path, &x, seconds);
            let mut row = vec![
                name.to_string(), batch.to_string(), cell(&timestamps, batch), cell(&variant_times[0], batch), cell(&variant_times[1], batch), cell(&variant_times[2], batch),
                half_error, cell(&submit_to_done, batch),
                cell(&e2e.to_ready, batch), cell(&e2e.to_frame_end, batch), e2e.frames, e2e.handover,
                cell(&e2e_unpipelined.to_ready, batch), e2e_unpipelined.frames, in_flight, cell(&cpu, batch),
                cell(&tract_cpu, batch),
            ];
            if with_torch {
                let pt = torch(path, &npy, seconds);
                let eager = pt.clone().map(|(e, _)| e);
                let graph_ms = pt.as_ref().ok().and_then(|(_, g)| *g);
                row.push(cell(&eager, batch));
                row.push(graph_ms.map_or("-".into(), |g| format!("{g:.3} ms")));
                row.push(ratio(&e2e.to_ready, &pt));
                row.push(match (&timestamps, graph_ms) {
                    (Ok((ours, _)), Some(g)) => format!("{:.2}x", ours / g),
                    _ => "-".into(),
                });
            }
            println!("| {} |", row.join(" | "));
        }
    }
    for (name, batch, profile, whole) in profiles {
        print_profile(&name, batch, &profile, whole);
    }
    let _ = std::fs::remove_dir_all(&tmp);
}
