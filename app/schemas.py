"""TEI's request and response bodies as pydantic models.

They do two jobs: validate what clients send with the strictness of TEI's serde types (a bool
is a JSON bool, a token id a non-negative integer, unknown fields are ignored, `null` only
where TEI takes an Option), and describe every route in /api-doc/openapi.json.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, RootModel, StrictBool, StrictStr

TokenId = Annotated[int, Field(strict=True, ge=0, le=2**32 - 1)]
InputItem = Union[StrictStr, list[TokenId]]
# One string, one id list, or a batch of those (`[1, 2, 3]` is ONE id input).
Input = Union[StrictStr, list[TokenId], list[InputItem]]
TruncationDirection = Literal["Left", "left", "Right", "right"]
Dimensions = Annotated[int, Field(strict=True, ge=0)]
# A single text, one pair ["a", "b"], or a batch of singles and pairs [["a"], ["a", "b"]].
Sequence = Annotated[list[StrictStr], Field(min_length=1, max_length=2)]
PredictInput = Union[StrictStr, Sequence, Annotated[list[Sequence], Field(min_length=1)]]


class Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class EmbedRequest(Request):
    inputs: Input = Field(examples=["What is Deep Learning?"])
    truncate: Optional[StrictBool] = Field(None, description="null: the server's --auto-truncate")
    truncation_direction: TruncationDirection = "Right"
    prompt_name: Optional[StrictStr] = Field(None, description="a key of the model's sentence-transformers prompts")
    normalize: StrictBool = True
    dimensions: Optional[Dimensions] = Field(None, description="Matryoshka truncation of the vector")


class EmbedAllRequest(Request):
    inputs: Input = Field(examples=["What is Deep Learning?"])
    truncate: Optional[StrictBool] = None
    truncation_direction: TruncationDirection = "Right"
    prompt_name: Optional[StrictStr] = None


class EmbedSparseRequest(EmbedAllRequest):
    pass


class PredictRequest(Request):
    inputs: PredictInput = Field(examples=["I like you. I love you"])
    truncate: Optional[StrictBool] = None
    truncation_direction: TruncationDirection = "Right"
    raw_scores: StrictBool = False


class RerankRequest(Request):
    query: StrictStr = Field(examples=["What is Deep Learning?"])
    texts: list[StrictStr] = Field(examples=[["Deep Learning is ..."]])
    truncate: Optional[StrictBool] = None
    truncation_direction: TruncationDirection = "Right"
    raw_scores: StrictBool = False
    return_text: StrictBool = False


class SimilarityInput(Request):
    source_sentence: StrictStr = Field(examples=["What is Deep Learning?"])
    sentences: list[StrictStr] = Field(examples=[["What is Machine Learning?"]])


class SimilarityParameters(Request):
    truncate: Optional[StrictBool] = None
    truncation_direction: TruncationDirection = "Right"
    prompt_name: Optional[StrictStr] = None


class SimilarityRequest(Request):
    inputs: SimilarityInput
    parameters: Optional[SimilarityParameters] = None


class OpenAICompatRequest(Request):
    input: Input = Field(examples=["What is Deep Learning?"])
    model: Optional[StrictStr] = Field(None, description="ignored (a warning is logged if it differs)")
    user: Optional[StrictStr] = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Optional[Dimensions] = None


class TokenizeRequest(Request):
    inputs: Union[StrictStr, list[StrictStr]] = Field(examples=["test"])
    add_special_tokens: StrictBool = True
    prompt_name: Optional[StrictStr] = None


class DecodeRequest(Request):
    ids: Union[list[TokenId], list[list[TokenId]]] = Field(examples=[[101, 2054, 102]])
    skip_special_tokens: StrictBool = True


class VertexRequest(Request):
    instances: list[Any] = Field(description="each one an /embed, /embed_sparse, /predict or /rerank body")


# Responses (for the OpenAPI document) --------------------------------------------------------
class EmbedResponse(RootModel[list[list[float]]]):
    pass


class EmbedAllResponse(RootModel[list[list[list[float]]]]):
    pass


class SparseValue(BaseModel):
    index: int
    value: float


class EmbedSparseResponse(RootModel[list[list[SparseValue]]]):
    pass


class Prediction(BaseModel):
    score: float
    label: str


class PredictResponse(RootModel[Union[list[Prediction], list[list[Prediction]]]]):
    pass


class Rank(BaseModel):
    index: int
    text: Optional[str] = None
    score: float


class RerankResponse(RootModel[list[Rank]]):
    pass


class SimilarityResponse(RootModel[list[float]]):
    pass


class OpenAIEmbedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    embedding: Union[list[float], str]
    index: int


class OpenAIUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class OpenAICompatResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIEmbedding]
    model: str
    usage: OpenAIUsage


class SimpleToken(BaseModel):
    id: int
    text: str
    special: bool
    start: Optional[int]
    stop: Optional[int]


class TokenizeResponse(RootModel[list[list[SimpleToken]]]):
    pass


class DecodeResponse(RootModel[list[str]]):
    pass


class VertexResponse(BaseModel):
    predictions: list[Any]


class Info(BaseModel):
    model_id: str
    model_sha: Optional[str]
    model_dtype: str
    served_model_name: Optional[str]
    model_type: dict
    max_concurrent_requests: int
    max_input_length: int
    max_batch_tokens: int
    max_batch_requests: Optional[int]
    max_client_batch_size: int
    auto_truncate: bool
    tokenization_workers: int
    version: str
    sha: Optional[str]
    docker_label: Optional[str]
    sharding: Optional[dict] = None  # tei-jax: devices, mesh, parameter shardings


class ErrorResponse(BaseModel):
    error: str
    error_type: Literal["Unhealthy", "Backend", "Overloaded", "Validation", "Tokenizer", "Empty"]


class OpenAIErrorResponse(BaseModel):
    message: str
    code: int
    type: str
