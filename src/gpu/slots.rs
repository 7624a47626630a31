//! Slot allocation: every value a block computes gets a pooled activation buffer, reused once
//! the value's last reader has run; aliases (Reshape, Flatten) share their source's slot.

use std::collections::HashMap;

use super::program::{Dispatch, Operand, Program, Step};
use crate::model::ir::Graph;
use crate::model::shape::Shapes;

/// Gives every value a pooled slot: a slot is reused once the last reader of its value ran.
pub(super) fn assign_slots(graph: &Graph, shapes: &Shapes, steps: Vec<Step>) -> Program {
    // Aliases (Reshape, Flatten) share their source's slot: resolve each value to its root.
    let mut root: HashMap<String, String> = HashMap::new();
    let resolve = |root: &HashMap<String, String>, v: &str| root.get(v).cloned().unwrap_or_else(|| v.to_string());
    let mut last_use: HashMap<String, usize> = HashMap::new();
    for (i, step) in steps.iter().enumerate() {
        match step {
            Step::Alias { from, to } => {
                let r = resolve(&root, from);
                last_use.insert(r.clone(), i);
                root.insert(to.clone(), r);
            }
            Step::Compute { calls, .. } => {
                for name in calls.iter().flat_map(|c| c.2.iter().flatten()) {
                    last_use.insert(resolve(&root, name), i);
                }
            }
        }
    }
    let output_root = resolve(&root, &graph.output);
    last_use.insert(output_root.clone(), usize::MAX);

    let size_of = |v: &str| shapes[v].iter().product::<usize>().max(1);
    let mut slot_sizes = vec![size_of(&graph.input.name)];
    let mut slot_of: HashMap<String, usize> = HashMap::from([(graph.input.name.clone(), 0)]);
    let mut free: Vec<usize> = Vec::new();
    let mut constants: Vec<String> = Vec::new();
    let mut dispatches = Vec::new();
    for (i, step) in steps.into_iter().enumerate() {
        let Step::Compute { calls, output } = step else { continue };
        let need = size_of(&output);
        // The smallest free slot that fits, else the largest free one (grown to fit).
        let best = (0..free.len())
            .filter(|&pos| slot_sizes[free[pos]] >= need)
            .min_by_key(|&pos| slot_sizes[free[pos]])
            .or_else(|| (0..free.len()).max_by_key(|&pos| slot_sizes[free[pos]]));
        let slot = match best {
            Some(pos) => {
                let s = free.swap_remove(pos);
                slot_sizes[s] = slot_sizes[s].max(need);
                s
            }
            None => {
                slot_sizes.push(need);
                slot_sizes.len() - 1
            }
        };
        slot_of.insert(output.clone(), slot);
        for (kernel, params, operands, workgroups) in calls {
            let inputs = operands
                .into_iter()
                .map(|o| match o {
                    None => Operand::Unused,
                    Some(name) if graph.initializers.contains_key(&name) => {
                        if !constants.contains(&name) {
                            constants.push(name.clone());
                        }
                        Operand::Constant(name)
                    }
                    Some(name) => Operand::Slot(slot_of[&resolve(&root, &name)]),
                })
                .collect();
            dispatches.push(Dispatch { kernel, params, inputs, output: slot, workgroups });
        }
        // Release the slots whose values are read for the last time by this step.
        let mut released: Vec<String> = slot_of
            .keys()
            .filter(|v| last_use.get(*v).is_none_or(|&l| l <= i) && **v != output)
            .cloned()
            .collect();
        if !last_use.contains_key(&output) {
            released.push(output.clone());
        }
        for v in released {
            let s = slot_of.remove(&v).expect("listed");
            if !slot_of.values().any(|&o| o == s) {
                free.push(s);
            }
        }
    }
    Program {
        dispatches,
        output_slot: slot_of.get(&output_root).copied().unwrap_or(0),
        slot_sizes,
        input_slot: 0,
        input_shape: shapes[&graph.input.name].clone(),
        output_shape: shapes[&graph.output].clone(),
        constants,
    }
}

