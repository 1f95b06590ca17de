"""CVAT for images 1.1 XML, as CVAT exports it (``annotations.xml``, alone or inside the export zip)::

    <annotations>
      <version>1.1</version>
      <meta><task>... <labels><label><name>car</name>...</label></labels></task></meta>
      <image id="0" name="frame.jpg" width="1280" height="720">
        <box label="car" source="manual" occluded="0" xtl="10.00" ytl="20.00" xbr="110.00" ybr="90.00"
             z_order="0" [rotation="15.0"]>
          <attribute name="...">...</attribute>
        </box>
        <polygon .../> <tag .../>
      </image>
    </annotations>

Box corners are pixels; a ``rotation`` (degrees, about the box centre) is read as the upright envelope
and counted. Polygons, points and other shapes are not boxes: counted under ``other_shapes``. An image
element with no box is an image labelled with nothing in it. The "CVAT for video" form (``<track>``) is
refused with what to export instead. Parsed with ``xml.etree.ElementTree``: it resolves no external
entities, and the expat it runs on (2.4.1+) limits entity expansion.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from training.labelio.classmap import ClassMap
from training.labelio.images import ImageResolver, place_images
from training.labelio.model import (
    LabelImportError,
    LabelledImage,
    check_names,
    clip_xyxy,
    default_names,
    rotated_envelope,
)
from training.labelio.report import ImportContext, ImportReport

SHAPES = ("polygon", "polyline", "points", "cuboid", "ellipse", "mask", "skeleton", "tag")


def cvat_xml(
    images: Iterable[LabelledImage], *, names: Sequence[str] | None = None, task: str = "citywatch"
) -> str:
    """The CVAT for images 1.1 document for ``images`` (image names are their file names).

    Model boxes (with a score) are written with ``source="auto"``, human ones ``source="manual"``.
    """
    imgs = list(images)
    names = list(names) if names is not None else default_names(imgs)
    check_names(imgs, names)
    root = ET.Element("annotations")
    ET.SubElement(root, "version").text = "1.1"
    t = ET.SubElement(ET.SubElement(root, "meta"), "task")
    for key, value in (("name", task), ("size", str(len(imgs))), ("mode", "annotation"), ("overlap", "0")):
        ET.SubElement(t, key).text = value
    labels = ET.SubElement(t, "labels")
    for n in names:
        lab = ET.SubElement(labels, "label")
        ET.SubElement(lab, "name").text = n
        ET.SubElement(lab, "type").text = "rectangle"
        ET.SubElement(lab, "attributes")
    for i, img in enumerate(imgs):
        el = ET.SubElement(
            root, "image", id=str(i), name=img.path.name, width=str(img.width), height=str(img.height)
        )
        for b in img.boxes:
            x1, y1, x2, y2 = clip_xyxy(b.xyxy, img.width, img.height)
            ET.SubElement(
                el,
                "box",
                label=b.label,
                source="auto" if b.score is not None else "manual",
                occluded="0",
                xtl=f"{x1:.2f}",
                ytl=f"{y1:.2f}",
                xbr=f"{x2:.2f}",
                ybr=f"{y2:.2f}",
                z_order="0",
            )
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_cvat(
    images: Iterable[LabelledImage],
    out: Path,
    *,
    names: Sequence[str] | None = None,
    images_folder: Path | None = None,
    copy: bool = True,
    task: str = "citywatch",
) -> Path:
    """Write ``out`` (CVAT for images 1.1 XML); with ``images_folder``, the images are linked or copied
    there (create the CVAT task from those files, then upload ``out`` as "CVAT 1.1")."""
    imgs = list(images)
    if images_folder is not None:
        place_images(imgs, images_folder, copy=copy)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(cvat_xml(imgs, names=names, task=task), encoding="utf-8")
    return out


def read_cvat(
    path: Path,
    *,
    images_dir: Path | None = None,
    class_map: ClassMap | None = None,
    skip_unknown: bool = False,
) -> tuple[list[LabelledImage], ImportReport]:
    """Read a CVAT for images 1.1 XML (or CVAT's export zip); images are looked up under ``images_dir``
    (default: the file's folder)."""
    path = Path(path)
    root_el = _parse(path)
    if root_el.tag != "annotations":
        raise LabelImportError(f"{path}: not a CVAT XML (the root is <{root_el.tag}>, not <annotations>)")
    if root_el.find("track") is not None:
        raise LabelImportError(
            f"{path}: this is a 'CVAT for video' export (<track>); export the task as 'CVAT for images 1.1'"
        )
    folder = Path(images_dir) if images_dir is not None else path.parent
    ctx = ImportContext("cvat", path, class_map=class_map, skip_unknown=skip_unknown, images_dir=folder)
    resolver = ImageResolver(folder)
    out: list[LabelledImage] = []
    for el in root_el.iter("image"):
        name = el.get("name", "")
        try:
            w, h = int(el.get("width", "")), int(el.get("height", ""))
        except ValueError as err:
            raise LabelImportError(f"{path}: <image name={name!r}> has no integer width/height") from err
        found = resolver.resolve(name)
        if found is None:
            ctx.missing(name)
            continue
        boxes = []
        for child in el:
            if child.tag != "box":
                if child.tag in SHAPES:
                    ctx.report.other_shapes[child.tag] += 1
                continue
            xyxy, rotated = _box_corners(path, name, child)
            box = ctx.box(name, child.get("label", ""), xyxy, (w, h), rotated=rotated)
            if box is not None:
                boxes.append(box)
        out.append(ctx.image(LabelledImage(path=found, width=w, height=h, boxes=boxes)))
    return ctx.finish(out)


def _box_corners(path: Path, name: str, el: ET.Element) -> tuple[tuple[float, float, float, float], bool]:
    try:
        x1, y1, x2, y2 = (float(el.get(k, "")) for k in ("xtl", "ytl", "xbr", "ybr"))
        rotation = float(el.get("rotation", "0") or 0)
    except ValueError as err:
        raise LabelImportError(f"{path}: a <box> of image {name!r} has non-numeric corners") from err
    if rotation % 360 == 0:
        return (x1, y1, x2, y2), False
    hw, hh = (x2 - x1) / 2, (y2 - y1) / 2
    corners = [(-hw, -hh), (hw, -hh), (hw, hh), (-hw, hh)]
    return rotated_envelope(x1 + hw, y1 + hh, corners, rotation), True


def _parse(path: Path) -> ET.Element:
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                members = [n for n in zf.namelist() if n.rsplit("/", 1)[-1] == "annotations.xml"]
                if not members:
                    raise LabelImportError(f"{path}: a zip without annotations.xml (not a CVAT export)")
                return ET.fromstring(zf.read(min(members, key=len)))
        return ET.parse(path).getroot()
    except OSError as err:
        raise LabelImportError(f"{path}: cannot read it ({err.strerror or err})") from err
    except ET.ParseError as err:
        raise LabelImportError(f"{path}: not well-formed XML: {err}") from err
