//! Running in a browser tab (wasm32 + WebGPU; WebGL2 has no compute shaders).
//!
//! On the web the renderer is created asynchronously: its adapter and device arrive only after
//! the tab's event loop has run. Bevy's `ScheduleRunnerPlugin` waits for them in a loop that
//! never yields, so a page without a window hangs; [`web_runner`] awaits the browser between
//! frames instead. A game with a canvas keeps `bevy_winit`'s own web loop, which yields already.

use bevy::app::{App, AppExit, PluginsState};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::Closure;

/// A runner for an app without a window in a browser tab: yields to the browser while plugins
/// are still being built (the renderer comes up asynchronously), then runs one frame per
/// browser task (`setTimeout(0)`) until the app exits. Install it with
/// `app.set_runner(web_runner)`, after `headless_plugins()`.
pub fn web_runner(mut app: App) -> AppExit {
    wasm_bindgen_futures::spawn_local(async move {
        while app.plugins_state() == PluginsState::Adding {
            yield_to_browser().await;
        }
        app.finish();
        app.cleanup();
        loop {
            app.update();
            if app.should_exit().is_some() {
                break;
            }
            yield_to_browser().await;
        }
    });
    AppExit::Success
}

/// Resolves after the browser has run its other tasks (promise callbacks, network, GPU maps).
pub async fn yield_to_browser() {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        let callback: Closure<dyn FnMut()> = Closure::once(move || {
            let _ = resolve.call0(&wasm_bindgen::JsValue::NULL);
        });
        if let Some(window) = web_sys::window() {
            let _ = window.set_timeout_with_callback_and_timeout_and_arguments_0(callback.as_ref().unchecked_ref(), 0);
        }
        callback.forget();
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}
