//! The references run unchanged on a CubeCL backend: wgpu (lavapipe in CI) agrees with flex.
//! The rotary reference is called directly (`rotary::reference::apply`): `RotaryEncoding::apply`
//! would dispatch to the fused kernel on wgpu, which `fused.rs` tests separately.
#![cfg(feature = "wgpu")]

mod common;

use burn::prelude::*;
use burn::tensor::DeviceKind;
use common::*;
use pezoo_encodings::{EncodingContext, Side};

#[test]
fn rotary_and_bias_references_agree_between_wgpu_and_flex() {
    let gpu = Device::wgpu(DeviceKind::DefaultDevice);
    let cpu = device();
    let (b, h, s, d) = (2, 3, 7, 10);
    let ctx = EncodingContext::new(d, h, Some(64));
    let x = random_vec(&mut rng(1), b * h * s * d);
    for toml in ["kind = \"rope\"\nlayout = \"interleaved\"", "kind = \"hope-hyp\"", "kind = \"xpos\""] {
        let on = |dev: &Device| {
            let enc = build(toml, &ctx, dev);
            let r = enc.as_dyn().rotary().unwrap().clone();
            let x = tensor4(x.clone(), [b, h, s, d], dev);
            host(pezoo_encodings::rotary::reference::apply(&r, x, &[5, -1_000_000], Side::Key, s))
        };
        let (g, c) = (on(&gpu), on(&cpu));
        let want: Vec<f64> = c.iter().map(|&v| v as f64).collect();
        assert_close(&g, &want, 1e-5, toml);
    }
    let on = |dev: &Device| {
        host(build("kind = \"alibi\"", &ctx, dev).as_dyn().attention_bias(3..9, 0..9, dev).unwrap())
    };
    let want: Vec<f64> = on(&cpu).iter().map(|&v| v as f64).collect();
    assert_close(&on(&gpu), &want, 1e-6, "alibi");
}
