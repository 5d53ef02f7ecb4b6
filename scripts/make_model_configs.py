"""Write the bundled model YAMLs (yoloport/nn/cfg/) from the two YOLOv5 architectures.

v6.0+ : 6x6 Conv stem, SPPF, C3 repeats 3-6-9-3   -> yolov5{n,s,m,l,x}.yaml
v5.0  : Focus stem, SPP, C3 repeats 3-9-9 (+3 after SPP) -> yolov5{n,s,m,l,x}-v5.0.yaml
yolov5s-conv: the v5.0 body with Focus replaced by the equivalent 6x6 stride-2 Conv (the seed's
config_v5s_conv.yaml). Run: python scripts/make_model_configs.py
"""
from pathlib import Path

SIZES = {"n": (0.33, 0.25), "s": (0.33, 0.50), "m": (0.67, 0.75), "l": (1.0, 1.0), "x": (1.33, 1.25)}
ANCHORS = """anchors:
  - [10,13, 16,30, 33,23]  # P3/8
  - [30,61, 62,45, 59,119]  # P4/16
  - [116,90, 156,198, 373,326]  # P5/32
"""
HEAD = """head:
  [[-1, 1, Conv, [512, 1, 1]],
   [-1, 1, nn.Upsample, [None, 2, 'nearest']],
   [[-1, 6], 1, Concat, [1]],  # cat backbone P4
   [-1, 3, C3, [512, False]],  # 13
   [-1, 1, Conv, [256, 1, 1]],
   [-1, 1, nn.Upsample, [None, 2, 'nearest']],
   [[-1, 4], 1, Concat, [1]],  # cat backbone P3
   [-1, 3, C3, [256, False]],  # 17 (P3/8-small)
   [-1, 1, Conv, [256, 3, 2]],
   [[-1, 14], 1, Concat, [1]],  # cat head P4
   [-1, 3, C3, [512, False]],  # 20 (P4/16-medium)
   [-1, 1, Conv, [512, 3, 2]],
   [[-1, 10], 1, Concat, [1]],  # cat head P5
   [-1, 3, C3, [1024, False]],  # 23 (P5/32-large)
   [[17, 20, 23], 1, Detect, [nc, anchors]],  # Detect(P3, P4, P5)
  ]
"""
BACKBONE_V6 = """backbone:
  [[-1, 1, Conv, [64, 6, 2, 2]],  # 0-P1/2
   [-1, 1, Conv, [128, 3, 2]],  # 1-P2/4
   [-1, 3, C3, [128]],
   [-1, 1, Conv, [256, 3, 2]],  # 3-P3/8
   [-1, 6, C3, [256]],
   [-1, 1, Conv, [512, 3, 2]],  # 5-P4/16
   [-1, 9, C3, [512]],
   [-1, 1, Conv, [1024, 3, 2]],  # 7-P5/32
   [-1, 3, C3, [1024]],
   [-1, 1, SPPF, [1024, 5]],  # 9
  ]
"""
BACKBONE_V5 = """backbone:
  [[-1, 1, {stem}],  # 0-P1/2
   [-1, 1, Conv, [128, 3, 2]],  # 1-P2/4
   [-1, 3, C3, [128]],
   [-1, 1, Conv, [256, 3, 2]],  # 3-P3/8
   [-1, 9, C3, [256]],
   [-1, 1, Conv, [512, 3, 2]],  # 5-P4/16
   [-1, 9, C3, [512]],
   [-1, 1, Conv, [1024, 3, 2]],  # 7-P5/32
   [-1, 1, SPP, [1024, [5, 9, 13]]],
   [-1, 3, C3, [1024, False]],  # 9
  ]
"""
FOCUS = "Focus, [64, 3]"
CONV6 = "Conv, [64, 6, 2, 2]"


def config(title: str, size: str, backbone: str) -> str:
    gd, gw = SIZES[size]
    return (
        f"# {title}\n# YOLOv5 architecture as released by Ultralytics (AGPL-3.0); written by scripts/make_model_configs.py\n"
        f"nc: 80  # number of classes\ndepth_multiple: {gd}  # model depth multiple\n"
        f"width_multiple: {gw}  # layer channel multiple\n{ANCHORS}\n{backbone}\n{HEAD}"
    )


def main() -> None:
    out = Path(__file__).resolve().parent.parent / "yoloport" / "nn" / "cfg"
    out.mkdir(parents=True, exist_ok=True)
    for s in SIZES:
        (out / f"yolov5{s}.yaml").write_text(config(f"YOLOv5{s}, v6.0+ (6x6 Conv stem, SPPF)", s, BACKBONE_V6))
        (out / f"yolov5{s}-v5.0.yaml").write_text(
            config(f"YOLOv5{s}, v5.0 (Focus stem, SPP)", s, BACKBONE_V5.format(stem=FOCUS))
        )
    (out / "yolov5s-conv.yaml").write_text(
        config("YOLOv5s v5.0 body with Focus replaced by the equivalent 6x6 stride-2 Conv", "s", BACKBONE_V5.format(stem=CONV6))
    )


if __name__ == "__main__":
    main()
