"""Control panels driven from code, the way a test or a script uses them without a browser."""
from __future__ import annotations

import pytest

from transfer_kit.widgets import (ControlPanel, Param, backbone_param, epochs_param, freeze_param,
                                  label_fraction_param, lr_param, strategy_param)


def make_panel(calls: list) -> ControlPanel:
    def on_run(values: dict) -> dict:
        calls.append(values)
        print(f"ran with {values}")
        return {"accuracy": 0.5 + values["epochs"] / 100}

    return ControlPanel([backbone_param(["efficientnet_lite0", "resnet18"]), strategy_param(), freeze_param(4),
                         lr_param(), epochs_param(default=2), label_fraction_param()], on_run=on_run, title="Test")


def test_panel_values_have_defaults():
    panel = make_panel([])
    assert panel.values() == {"backbone": "efficientnet_lite0", "strategy": "frozen", "trainable_groups": 1,
                              "lr": 1e-3, "epochs": 2, "label_fraction": 1.0}


def test_panel_set_validates_each_kind():
    panel = make_panel([])
    panel.set(backbone="resnet18", lr=3e-4, epochs=5, trainable_groups=4, label_fraction=0.25)
    assert panel.values()["backbone"] == "resnet18"
    with pytest.raises(ValueError, match="not one of the options"):
        panel.set(backbone="resnet19")
    with pytest.raises(ValueError, match="out of range"):
        panel.set(lr=1.0)
    with pytest.raises(ValueError, match="whole number"):
        panel.set(epochs=2.5)
    with pytest.raises(ValueError, match="out of range"):
        panel.set(trainable_groups=5)
    with pytest.raises(ValueError, match="Unknown parameter"):
        panel.set(batch_size=8)


def test_run_button_calls_on_run_with_widget_values(capsys):
    calls = []
    panel = make_panel(calls)
    box = panel.widget
    panel._widgets["epochs"].value = 7
    button = next(child for child in box.children if getattr(child, "description", "") == "Run")
    button.click()
    assert calls == [panel.values()]
    assert calls[0]["epochs"] == 7
    assert panel.result["accuracy"] == pytest.approx(0.57)
    assert panel.history[-1]["epochs"] == 7
    # Outside a Jupyter kernel the Output widget cannot capture, so the run's prints reach stdout.
    assert "ran with" in capsys.readouterr().out


def test_text_fallback_outside_jupyter():
    panel = make_panel([])
    bundle = panel._repr_mimebundle_()
    assert list(bundle) == ["text/plain"]
    assert "epochs=2" in bundle["text/plain"]
    assert "panel.run()" in bundle["text/plain"]


def test_run_without_on_run_explains_fix():
    panel = ControlPanel([epochs_param()])
    with pytest.raises(ValueError, match="on_run"):
        panel.run()


@pytest.mark.parametrize("kwargs, message", [
    (dict(name="learning rate", kind="float", default=1, min=0, max=2), "identifier"),
    (dict(name="lr", kind="slider", default=1), "unknown kind"),
    (dict(name="lr", kind="log_float", default=1e-3, min=0, max=1), "above 0"),
    (dict(name="n", kind="int", default=1, min=3, max=2), "min <= max"),
])
def test_param_rejects_bad_definitions(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Param(**kwargs)


def test_duplicate_param_names_rejected():
    with pytest.raises(ValueError, match="Duplicate"):
        ControlPanel([epochs_param(), epochs_param()])
