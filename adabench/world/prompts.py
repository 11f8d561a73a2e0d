"""PanWorld's prompt grammar: strict parsing into a ``PromptSpec`` with known motion.

Two patterns (case-insensitive, any whitespace, article ``a`` or ``an`` before the scene)::

    a {slow|fast} pan {left|right|up|down} over a {scene} with {color} {shape}
    a still shot of a {scene} with {color} {shape}

Motion convention: "pan left" means the *camera* moves left, so the image content moves
RIGHT. ``PromptSpec.velocity`` is the image-plane content motion ``(vx, vy)`` in px/frame
(x to the right, y down) at frame size 32 -- what an optical-flow estimator measures;
``PromptSpec.camera_velocity`` is its negation. Speeds scale with frame size / 32 so the
world looks the same at every size (``velocity_at(size)``).
"""

from __future__ import annotations

from dataclasses import dataclass

from adabench.errors import UserError

SPEEDS: dict[str, float] = {"still": 0.0, "slow": 0.5, "fast": 1.5}   # content px/frame at size 32
PAN_SPEEDS = ("slow", "fast")
# content motion direction (unit vector, x right, y down) for each camera pan direction
DIRECTIONS: dict[str, tuple[float, float]] = {"left": (1.0, 0.0), "right": (-1.0, 0.0),
                                              "up": (0.0, 1.0), "down": (0.0, -1.0)}
SCENES = ("city", "desert", "forest", "ocean")
COLORS = ("blue", "green", "red", "white", "yellow")
SHAPES = ("circles", "squares", "triangles")
NO_DIRECTION = "none"
REFERENCE_SIZE = 32

# One shared token vocabulary (index = token id); a prompt is 5 tokens:
# (speed, direction or "none", scene, color, shape).
VOCAB: list[str] = [NO_DIRECTION, *SPEEDS, *DIRECTIONS, *SCENES, *COLORS, *SHAPES]
VOCAB_SIZE = len(VOCAB)
TOKEN_ID: dict[str, int] = {word: i for i, word in enumerate(VOCAB)}
PROMPT_TOKENS = 5

PAN_PATTERN = "a {slow|fast} pan {left|right|up|down} over a {scene} with {color} {shape}"
STILL_PATTERN = "a still shot of a {scene} with {color} {shape}"
ARTICLES = ("a", "an")


def _article(scene: str) -> str:
    return "an" if scene[0] in "aeiou" else "a"


def make_prompt(motion: str, scene: str, color: str, shape: str) -> str:
    """Canonical prompt text for a motion class (``still`` or ``{speed}-{direction}``) and attributes."""
    if motion == "still":
        return f"a still shot of {_article(scene)} {scene} with {color} {shape}"
    speed, _, direction = motion.partition("-")
    return f"a {speed} pan {direction} over {_article(scene)} {scene} with {color} {shape}"


@dataclass(frozen=True)
class PromptSpec:
    """A parsed PanWorld prompt: attributes plus the ground-truth motion they imply."""

    text: str                   # canonical, normalised prompt text
    speed: str                  # "still" | "slow" | "fast"
    direction: str | None       # camera pan direction; None for a still shot
    scene: str
    color: str
    shape: str

    @property
    def motion(self) -> str:
        """Motion class: ``still`` or ``{speed}-{direction}`` (e.g. ``fast-left``)."""
        return "still" if self.direction is None else f"{self.speed}-{self.direction}"

    @property
    def velocity(self) -> tuple[float, float]:
        """Image content motion (vx, vy) in px/frame at frame size 32 (x right, y down)."""
        return self.velocity_at(REFERENCE_SIZE)

    def velocity_at(self, size: int) -> tuple[float, float]:
        """Image content motion (vx, vy) in px/frame at frame size ``size``."""
        if self.direction is None:
            return (0.0, 0.0)
        s = SPEEDS[self.speed] * size / REFERENCE_SIZE
        ux, uy = DIRECTIONS[self.direction]
        return (ux * s + 0.0, uy * s + 0.0)   # + 0.0 turns -0.0 into 0.0

    @property
    def camera_velocity(self) -> tuple[float, float]:
        """Camera motion in world px/frame at size 32: the negation of ``velocity``."""
        vx, vy = self.velocity
        return (-vx + 0.0, -vy + 0.0)

    @property
    def tokens(self) -> tuple[int, ...]:
        """Five token ids into ``VOCAB``: speed, direction (or "none"), scene, color, shape."""
        words = (self.speed, self.direction or NO_DIRECTION, self.scene, self.color, self.shape)
        return tuple(TOKEN_ID[w] for w in words)


def attribute_classes() -> dict[str, list[str]]:
    """Classes per attribute, in a fixed order (the evaluator classifies each attribute)."""
    motions = ["still"] + [f"{s}-{d}" for s in PAN_SPEEDS for d in DIRECTIONS]
    return {"motion": motions, "scene": list(SCENES), "color": list(COLORS), "shape": list(SHAPES)}


def grammar_summary() -> list[str]:
    """Human-readable lines describing the grammar (for ``adabench list``)."""
    return [PAN_PATTERN, STILL_PATTERN,
            f"scene: {', '.join(SCENES)}", f"color: {', '.join(COLORS)}", f"shape: {', '.join(SHAPES)}",
            "'pan left' moves the camera left, so content moves right (0.5 px/frame slow, 1.5 fast at 32x32)"]


def _quote(text: str, limit: int = 120) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _structure_error(text: str) -> UserError:
    return UserError(f"prompt {_quote(text)} does not match the PanWorld grammar; accepted patterns: "
                     f"'{PAN_PATTERN}' or '{STILL_PATTERN}'")


def _check(kind: str, word: str, accepted, text: str) -> str:
    if word not in accepted:
        raise UserError(f"unknown {kind} {word!r} in prompt {_quote(text)}; accepted: {', '.join(sorted(accepted))}")
    return word


def parse_prompt(text: str) -> PromptSpec:
    """Parse a prompt strictly; raise a one-line ``UserError`` naming any bad word."""
    if not isinstance(text, str):
        raise UserError(f"prompt must be text, got {type(text).__name__}")
    words = text.lower().split()
    norm = " ".join(words)
    # slots: (kind, word, accepted) checked after the fixed words matched
    if len(words) == 9 and words[:4] == ["a", "still", "shot", "of"] and words[4] in ARTICLES and words[6] == "with":
        speed, direction, rest = "still", None, words[5:]
    elif (len(words) == 10 and words[0] == "a" and words[2] == "pan" and words[4] == "over"
          and words[5] in ARTICLES and words[7] == "with"):
        speed = _check("speed", words[1], PAN_SPEEDS, norm)
        direction = _check("direction", words[3], DIRECTIONS, norm)
        rest = words[6:]
    else:
        raise _structure_error(norm)
    scene = _check("scene", rest[0], SCENES, norm)
    color = _check("color", rest[2], COLORS, norm)
    shape = _check("shape", rest[3], SHAPES, norm)
    motion = "still" if direction is None else f"{speed}-{direction}"
    return PromptSpec(make_prompt(motion, scene, color, shape), speed, direction, scene, color, shape)
