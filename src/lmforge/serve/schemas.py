"""The request bodies of the OpenAI API that the server takes, validated by pydantic.

Field names, defaults and ranges are the API's (platform.openai.com/docs/api-reference):
temperature in [0, 2] (default 1), top_p in (0, 1], presence and frequency penalties in
[-2, 2], up to 4 stop strings, `logprobs` an integer up to 5 for completions and a flag
with `top_logprobs` up to 20 for chat. `top_k`, `min_p` and `repetition_penalty` are
extensions (as vLLM and llama.cpp's servers take them). `logit_bias` maps token ids (as
strings) to biases in [-100, 100]. Unknown fields are refused, so a misspelt setting is an
error rather than silently ignored; `suffix`, `tools`, `functions` and a JSON
`response_format` are known and refused with the reason. A field sent as `null` takes
its default, as the API allows (clients such as LangChain send nulls). Responses are built
as plain dicts in app.py, field for field as the API defines them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


INT64 = 2**63


class _Generation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _null_is_default(cls, data):
        """`"temperature": null` means the default, as in the API; a required field sent
        as null stays null and is refused."""
        if isinstance(data, dict):
            fields = cls.model_fields
            return {
                k: v
                for k, v in data.items()
                if v is not None or k not in fields or fields[k].is_required()
            }
        return data

    @model_validator(mode="after")
    def _stream_options_need_stream(self):
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        return self

    model: str
    max_tokens: int | None = Field(None, ge=0)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=-1, description="-1 or 0: no limit")
    min_p: float = Field(0.0, ge=0, le=1)
    repetition_penalty: float = Field(1.0, gt=0)
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    seed: int | None = Field(None, ge=-INT64, lt=INT64)  # the API's int64
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1, le=16)
    stream: bool = False
    stream_options: StreamOptions | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = None  # accepted, unused

    @field_validator("logit_bias")
    @classmethod
    def _bias(cls, v):
        """{"token id": bias in [-100, 100]} -> {id: bias}."""
        out = {}
        for key, bias in (v or {}).items():
            if not key.strip().lstrip("-").isdigit():
                raise ValueError(f'keys are token ids as strings, like "50256" (got {key!r})')
            if not -100 <= bias <= 100:
                raise ValueError(f"biases are in [-100, 100] (got {bias} for {key})")
            out[int(key)] = bias
        return out or None

    @field_validator("stop")
    @classmethod
    def _stops(cls, v):
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        return [s for s in stops if s]

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)


class CompletionRequest(_Generation):
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool = False
    best_of: int | None = Field(None, ge=1, le=16)
    suffix: str | None = None

    @model_validator(mode="after")
    def _best_of_and_suffix(self):
        if self.best_of is not None and self.best_of < self.n:
            raise ValueError(f"best_of ({self.best_of}) must be at least n ({self.n})")
        if self.best_of is not None and self.best_of > self.n and self.stream:
            raise ValueError("best_of cannot be streamed: the best are known only at the end")
        if self.suffix:
            raise ValueError(
                "suffix (insertion between a prompt and a suffix) needs a model trained to "
                "fill in the middle; this server only continues the prompt"
            )
        return self

    @field_validator("prompt")
    @classmethod
    def _not_empty(cls, v):
        if isinstance(v, list) and not v:
            raise ValueError("the prompt list is empty")
        return v


class ContentPart(BaseModel):
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")  # name, tool_calls, ... carry no text here
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""


class ChatCompletionRequest(_Generation):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=0)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    # known to the API, refused with a reason (below) rather than as unknown fields
    tools: list | None = None
    functions: list | None = None
    response_format: dict | None = None

    @model_validator(mode="after")
    def _top_logprobs_need_logprobs(self):
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        if self.tools or self.functions:
            raise ValueError(
                "tools and functions: this server does not call tools (its models have no "
                "tool-calling format); describe the tool in a message instead"
            )
        if self.response_format and self.response_format.get("type", "text") != "text":
            raise ValueError(
                'response_format: only {"type": "text"}; this server does not constrain '
                "the output to JSON"
            )
        return self


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None

    @field_validator("input")
    @classmethod
    def _not_empty(cls, v):
        if isinstance(v, list) and not v:
            raise ValueError("the input list is empty")
        return v
