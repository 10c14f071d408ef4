"""utils.viz: every function returns a Figure holding what it was asked to draw, and rejects bad input."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from utils.train import History  # noqa: E402
from utils.viz import draw_boxes, overlay_masks, palette, plot_confusion_matrix, plot_history, show_images  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def texts(ax):
    return [t.get_text() for t in ax.texts]


# ---------------------------------------------------------------------------------------------
# show_images
# ---------------------------------------------------------------------------------------------
def test_show_images_one_axes_per_image_titled_by_class_name():
    images = torch.rand(10, 1, 8, 8)
    fig = show_images(images, torch.arange(10) % 3, classes=["cat", "dog", "owl"], nrow=4, title="pets")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 10  # the two unused cells of the 3 x 4 grid are removed
    assert [ax.get_title() for ax in fig.axes] == ["cat", "dog", "owl"] * 3 + ["cat"]
    np.testing.assert_allclose(fig.axes[3].images[0].get_array(), images[3, 0].numpy(), rtol=1e-6)
    assert fig._suptitle.get_text() == "pets"
    rows = {round(ax.get_position().y0, 3) for ax in fig.axes}
    assert len(rows) == 3


def test_show_images_colour_uint8_list_and_single_image():
    rgb = torch.randint(0, 256, (2, 3, 5, 7), dtype=torch.uint8)
    fig = show_images(rgb, ["a", "b"])
    shown = fig.axes[1].images[0].get_array()
    assert shown.shape == (5, 7, 3)
    np.testing.assert_allclose(shown, rgb[1].permute(1, 2, 0).numpy() / 255.0, rtol=1e-6)
    assert len(show_images([torch.rand(3, 4, 4), torch.rand(1, 6, 6)]).axes) == 2
    assert len(show_images(torch.rand(3, 4, 4)).axes) == 1
    assert len(show_images(np.random.rand(4, 4, 3)).axes) == 1  # NumPy (H, W, C)


def test_show_images_into_an_axes_tiles_a_mosaic():
    fig, ax = plt.subplots()
    out = show_images(torch.rand(5, 1, 4, 4), [0, 1, 2, 3, 4], nrow=3, ax=ax)
    assert out is fig and len(fig.axes) == 1 and len(ax.images) == 1
    assert ax.images[0].get_array().shape == (2 * 6 + 2, 3 * 6 + 2)  # 2 rows x 3 tiles of 4 px, padding 2
    assert texts(ax) == ["0", "1", "2", "3", "4"]


@pytest.mark.parametrize(
    "images, error, match",
    [
        (torch.rand(4, 2, 8, 8), ValueError, "1 or 3 channels"),
        (torch.rand(4, 4, 8, 8), ValueError, "1 or 3 channels"),
        (torch.rand(2, 1, 1, 8, 8), ValueError, r"\(N, C, H, W\)"),
        (torch.randn(2, 1, 8, 8) * 3, ValueError, r"\[0, 1\].*normalisation"),
        (torch.randint(0, 9, (2, 1, 4, 4), dtype=torch.int32), TypeError, "uint8"),
        (torch.rand(0, 1, 4, 4), ValueError, "empty"),
        (torch.rand(300, 1, 2, 2), ValueError, "at most"),
    ],
)
def test_show_images_rejects_bad_images(images, error, match):
    with pytest.raises(error, match=match):
        show_images(images)


def test_show_images_rejects_mismatched_labels():
    with pytest.raises(ValueError, match="one entry per item"):
        show_images(torch.rand(3, 1, 4, 4), [0, 1])
    with pytest.raises(ValueError, match="no name in classes"):
        show_images(torch.rand(2, 1, 4, 4), [0, 5], classes=["a", "b"])


# ---------------------------------------------------------------------------------------------
# plot_history and plot_confusion_matrix
# ---------------------------------------------------------------------------------------------
def _lines(ax):
    return {line.get_label(): line for line in ax.get_lines()}


def test_plot_history_has_loss_and_accuracy_panels_with_train_and_val():
    h = History(
        train_loss=[1.0, 0.6, 0.5],
        train_acc=[0.5, 0.7, 0.8],
        val_loss=[1.1, 0.7, 0.9],
        val_acc=[0.4, 0.6, 0.65],
        lr=[0.1] * 3,
        epoch_time=[1.0] * 3,
        best_epoch=1,
    )
    fig = plot_history(h, title="run")
    assert len(fig.axes) == 2
    loss_ax, acc_ax = fig.axes
    assert loss_ax.get_ylabel() == "loss" and acc_ax.get_ylabel() == "accuracy"
    lines = _lines(loss_ax)
    assert {"train", "val", "best epoch"} == set(lines)
    np.testing.assert_allclose(lines["val"].get_ydata(), [1.1, 0.7, 0.9])
    np.testing.assert_allclose(lines["train"].get_xdata(), [1, 2, 3])  # epochs count from 1
    assert lines["best epoch"].get_xdata()[0] == 2
    np.testing.assert_allclose(_lines(acc_ax)["train"].get_ydata(), [0.5, 0.7, 0.8])
    assert loss_ax.get_legend() is not None


def test_plot_history_leaves_out_missing_curves():
    nan = math.nan
    regression = {
        "train_loss": [3.0, 2.0],
        "train_acc": [nan, nan],
        "val_loss": [3.5, 2.5],
        "val_acc": [nan, nan],
    }
    fig = plot_history(regression)
    assert len(fig.axes) == 1 and set(_lines(fig.axes[0])) == {"train", "val"}
    fig = plot_history({"train_loss": [1.0, 0.5], "train_acc": [0.5, 0.9]})
    assert [set(_lines(ax)) for ax in fig.axes] == [{"train"}, {"train"}]
    fig = plot_history({"accuracy": [0.5, 0.7]})  # a list without train_/val_ gets a panel of its own
    assert len(fig.axes) == 1 and fig.axes[0].get_ylabel() == "accuracy"
    with pytest.raises(ValueError, match="no finite values"):
        plot_history({"train_loss": [nan, nan], "best_epoch": None})
    with pytest.raises(ValueError, match="no finite values"):
        plot_history({"lr": [0.1, 0.1]})  # bookkeeping is drawn only when asked for
    with pytest.raises(TypeError, match="History"):
        plot_history([1.0, 0.5])


def test_plot_history_draws_every_named_metric_of_a_history():
    h = History(monitor="val_map", mode="max")
    for epoch in range(4):
        h.append(
            {
                "train_loss": 1.0 / (epoch + 1),
                "train_loss_box_reg": 0.5 / (epoch + 1),
                "val_map": [0.1, 0.3, 0.25, 0.2][epoch],
                "val_map_50": 0.2 * epoch,
                "lr": 0.01,
                "epoch_time": 2.0,
            }
        )
    assert h.best_epoch == 1 and h["val_map"] == [0.1, 0.3, 0.25, 0.2]
    fig = plot_history(h)
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert labels == ["loss", "loss_box_reg", "map", "map_50"]  # loss first, then in the order recorded
    map_ax = fig.axes[2]
    np.testing.assert_allclose(_lines(map_ax)["val"].get_ydata(), [0.1, 0.3, 0.25, 0.2])
    assert _lines(map_ax)["best epoch"].get_xdata()[0] == 2
    fig = plot_history(h, metrics=["map", "lr"])
    assert [ax.get_ylabel() for ax in fig.axes] == ["map", "lr"]
    np.testing.assert_allclose(_lines(fig.axes[1])["lr"].get_ydata(), [0.01] * 4)
    plt.close("all")


def test_plot_confusion_matrix_writes_every_count():
    cm = torch.tensor([[5, 1, 0], [2, 7, 1], [0, 0, 4]])
    fig = plot_confusion_matrix(cm, ["cat", "dog", "owl"])
    ax = fig.axes[0]
    assert len(fig.axes) == 2  # the matrix and its colour bar
    assert texts(ax) == [str(v) for v in cm.flatten().tolist()]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["cat", "dog", "owl"]
    assert ax.get_xlabel() == "predicted" and ax.get_ylabel() == "true"
    np.testing.assert_array_equal(ax.images[0].get_array(), cm.numpy())


@pytest.mark.parametrize("normalize, axis", [(True, 1), ("true", 1), ("pred", 0)])
def test_plot_confusion_matrix_normalizes_rows_or_columns(normalize, axis):
    cm = np.array([[3, 1], [0, 0]])  # an empty row / column stays 0 instead of NaN
    fig = plot_confusion_matrix(cm, normalize=normalize)
    shown = np.asarray(fig.axes[0].images[0].get_array())
    expected = cm / np.maximum(cm.sum(axis=axis, keepdims=True), 1)
    np.testing.assert_allclose(shown, expected)
    assert texts(fig.axes[0]) == [f"{v:.2f}" for v in expected.flatten()]


def test_plot_confusion_matrix_rejects_bad_input():
    with pytest.raises(ValueError, match="square"):
        plot_confusion_matrix(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="non-negative"):
        plot_confusion_matrix(np.array([[1, -1], [0, 1]]))
    with pytest.raises(ValueError, match="name the 2 classes"):
        plot_confusion_matrix(np.eye(2), ["a", "b", "c"])
    with pytest.raises(ValueError, match="normalize"):
        plot_confusion_matrix(np.eye(2), normalize="rows")


# ---------------------------------------------------------------------------------------------
# draw_boxes and overlay_masks
# ---------------------------------------------------------------------------------------------
def test_draw_boxes_adds_one_rectangle_and_caption_per_box():
    image = torch.rand(3, 32, 48)
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 8.0, 30.0, 20.0], [20.0, 2.0, 47.0, 31.0]])
    classes = ["background", "circle", "square", "triangle"]
    fig = draw_boxes(
        image, boxes, torch.tensor([1, 3, 1]), classes=classes, scores=torch.tensor([0.9, 0.456, 0.5])
    )
    ax = fig.axes[0]
    rects = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert len(rects) == 3
    assert rects[1].get_xy() == (4.5, 7.5) and rects[1].get_width() == 25 and rects[1].get_height() == 12
    assert texts(ax) == ["circle 0.90", "triangle 0.46", "circle 0.50"]
    assert rects[0].get_edgecolor() == rects[2].get_edgecolor() != rects[1].get_edgecolor()  # colour by class
    assert ax.images[0].get_array().shape == (32, 48, 3)


def test_draw_boxes_without_labels_and_with_no_boxes():
    fig = draw_boxes(torch.rand(1, 16, 16), torch.tensor([[1.0, 1.0, 5.0, 5.0], [2.0, 2.0, 9.0, 9.0]]))
    rects = [p for p in fig.axes[0].patches if isinstance(p, Rectangle)]
    assert len(rects) == 2 and texts(fig.axes[0]) == []
    assert rects[0].get_edgecolor() != rects[1].get_edgecolor()
    fig = draw_boxes(torch.rand(3, 16, 16), torch.zeros(0, 4))
    assert not [p for p in fig.axes[0].patches if isinstance(p, Rectangle)]
    fig, ax = plt.subplots()
    assert draw_boxes(torch.rand(3, 8, 8), [[0, 0, 4, 4]], scores=[0.25], ax=ax) is fig and texts(ax) == [
        "0.25"
    ]


def test_draw_boxes_rejects_bad_boxes():
    img = torch.rand(3, 16, 16)
    with pytest.raises(ValueError, match=r"\(K, 4\)"):
        draw_boxes(img, torch.zeros(2, 5))
    with pytest.raises(ValueError, match="x1 <= x2"):
        draw_boxes(img, torch.tensor([[10.0, 0.0, 5.0, 5.0]]))  # looks like xywh with a negative width
    with pytest.raises(ValueError, match="one entry per item"):
        draw_boxes(img, torch.zeros(2, 4), labels=[1])
    with pytest.raises(ValueError, match="background"):
        draw_boxes(img, torch.zeros(1, 4), labels=[3], classes=["circle", "square", "triangle"])


def test_overlay_semantic_mask_colours_each_class_and_keeps_background():
    image = torch.rand(3, 12, 12)
    mask = torch.zeros(12, 12, dtype=torch.long)
    mask[2:6, 2:6] = 1
    mask[7:11, 5:9] = 3
    fig = overlay_masks(image, mask, alpha=0.5, classes=["bg", "circle", "square", "triangle"])
    shown = np.asarray(fig.axes[0].images[0].get_array())
    img = image.permute(1, 2, 0).numpy()
    background = (mask == 0).numpy()
    np.testing.assert_allclose(shown[background], img[background], rtol=1e-6)
    colors = palette(4)
    np.testing.assert_allclose(shown[3, 3], 0.5 * img[3, 3] + 0.5 * np.array(colors[1]), rtol=1e-5)
    np.testing.assert_allclose(shown[8, 6], 0.5 * img[8, 6] + 0.5 * np.array(colors[3]), rtol=1e-5)
    legend = fig.axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["circle", "triangle"]
    # alpha = 0 leaves the image untouched
    np.testing.assert_allclose(
        np.asarray(overlay_masks(image, mask, alpha=0).axes[0].images[0].get_array()), img, rtol=1e-6
    )


def test_overlay_instance_masks_get_distinct_colours():
    image = torch.zeros(1, 10, 10)  # gray, shown in colour
    masks = torch.zeros(3, 10, 10, dtype=torch.bool)
    masks[0, :3, :3] = masks[1, 5:, 5:] = masks[2, :3, 6:] = True
    shown = np.asarray(overlay_masks(image, masks, alpha=1.0).axes[0].images[0].get_array())
    assert shown.shape == (10, 10, 3)
    picked = {tuple(np.round(shown[y, x], 4)) for y, x in [(1, 1), (7, 7), (1, 8)]}
    assert len(picked) == 3 and (0, 0, 0) not in picked
    np.testing.assert_array_equal(shown[4, 0], [0, 0, 0])


def test_overlay_masks_rejects_bad_masks():
    image = torch.rand(3, 8, 8)
    with pytest.raises(ValueError, match="match the image size"):
        overlay_masks(image, torch.zeros(6, 6, dtype=torch.long))
    with pytest.raises(ValueError, match="bools"):
        overlay_masks(image, torch.rand(2, 8, 8))
    with pytest.raises(ValueError, match="non-negative"):
        overlay_masks(image, -torch.ones(8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="alpha"):
        overlay_masks(image, torch.zeros(8, 8, dtype=torch.long), alpha=1.5)


def test_palette_colours_are_distinct():
    for n in (3, 10, 15, 40):
        colors = palette(n)
        assert len(colors) == n and len(set(colors)) == n
