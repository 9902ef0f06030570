import pytest

from magedit.config import PRESETS, EditConfig, config_from, preset


def test_paper_defaults():
    c = EditConfig()
    assert (c.steps, c.guidance_scale, c.max_iter, c.tau1, c.tau2, c.tau_self) == (
        50,
        7.5,
        15,
        10,
        25,
        25,
    )
    assert (c.scale, c.negative_scale, c.spatial_lambda, c.blend_steps) == (2.5, 5.5, 3.0, 15)
    assert (c.null_inner_steps, c.null_lr, c.null_epsilon, c.inversion) == (
        10,
        1e-2,
        1e-5,
        "null_text",
    )


def test_schedule_matches_authors_fractions():
    c = EditConfig()
    # cross_replace_steps 0.8 -> 40 steps; self_replace 0.5 -> 25; MAG i < 25; blend 50 - i <= 15.
    assert sum(c.cross_inject_at(i) for i in range(50)) == 40
    assert sum(c.self_inject_at(i) for i in range(50)) == 25
    assert [i for i in range(50) if c.guide_at(i)] == list(range(25))
    assert [i for i in range(50) if c.blend_at(i)] == list(range(35, 50))
    assert sum(PRESETS["object"].cross_inject_at(i) for i in range(50)) == 10
    assert not any(c.replace(max_iter=0).guide_at(i) for i in range(50))


def test_speed_options_that_change_numbers_are_off_by_default():
    c = EditConfig()
    assert (c.early_stop, c.compile, c.reference) == (0.0, False, False)
    assert c.channels_last is None and c.cuda_graphs  # automatic: used on a GPU only


def test_presets():
    assert preset("color").constraint == "token_ratio"
    assert preset("object").constraint == "spatial_ratio" and preset("object").tau1 == 40
    assert preset("texture", max_iter=3).max_iter == 3
    with pytest.raises(ValueError, match="unknown preset 'shape'"):
        preset("shape")


def test_with_steps_rescales():
    c = EditConfig().with_steps(20)
    assert (c.steps, c.tau1, c.tau_self, c.tau2, c.blend_steps) == (20, 4, 10, 10, 6)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"steps": 0}, "steps must be between"),
        ({"max_iter": 2.5}, "max_iter must be an integer"),
        ({"tau1": 60}, "tau1 must be between 0 and steps"),
        ({"guidance_scale": float("nan")}, "guidance_scale must be a finite number"),
        ({"constraint": "area"}, "constraint must be one of"),
        ({"inversion": "magic"}, "inversion must be one of"),
        ({"early_stop": 1.5}, r"early_stop must be a fraction in \[0, 1\)"),
        ({"early_stop": -0.1}, "early_stop must be a fraction"),
        ({"compile": "yes"}, "compile must be True or False"),
        ({"channels_last": 1}, "channels_last must be True or False"),
        ({"channels_last": "auto"}, "channels_last must be True or False"),
    ],
)
def test_bad_values_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        EditConfig(**bad)


def test_dict_round_trip():
    c = EditConfig(max_iter=3, scale=4.0)
    assert EditConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="unknown EditConfig fields"):
        EditConfig.from_dict({"nope": 1})


def test_there_is_no_seed():
    """Nothing in an edit draws a random number (DDIM eta = 0), so no setting pretends to."""
    assert "seed" not in EditConfig().to_dict()
    with pytest.raises(TypeError):
        EditConfig(seed=0)


def test_config_from_is_the_preset_rescaled_then_the_fields_given():
    assert config_from() == EditConfig()
    assert config_from("object") == PRESETS["object"]
    assert config_from("object", 10) == PRESETS["object"].with_steps(10)
    assert config_from("color", 20, tau1=3, max_iter=None) == preset("color").with_steps(
        20
    ).replace(tau1=3)
    assert config_from(None, None, scale=None, resolution=256) == EditConfig(resolution=256)
    with pytest.raises(ValueError, match="unknown preset 'shape'"):
        config_from("shape")
    for steps, message in (
        (0, "steps must be between 1 and 1000, got 0"),
        (True, "steps must be an integer"),
        (2.5, "steps must be an integer"),
    ):
        with pytest.raises(ValueError, match=message):
            config_from("color", steps)
    with pytest.raises(ValueError, match="^max_iter must be between 0 and 200"):
        config_from("color", max_iter=-1)
