"""Model building: `encoder_type: mirror` builds MirrorModel, `encoder_type: hred` the stock
seq2seq model with HRED's hierarchical encoder and context-fed decoder; anything else the
stock model."""
import onmt.decoders
import onmt.encoders
import onmt.model_builder

from onmt_mirror.errors import MirrorError
from onmt_mirror.models.hred import HRED_DECODER, HRED_ENCODER, HREDDecoder, HREDEncoder
from onmt_mirror.models.mirror import MirrorModel
from onmt_mirror.dialogue import QUERY_TOKEN, TURN_TOKEN
from onmt_mirror.opts import MIRROR_ENCODER, MirrorConfig
from onmt_mirror.registration.patching import declares, original, replaces

declares(onmt.encoders, 'register_encoder("hred")', why="the public encoder registry: "
         "HRED's hierarchical encoder, which the stock builder pairs with HRED's decoder")
if HRED_ENCODER not in onmt.encoders.str2enc:
    onmt.encoders.register_encoder(HRED_ENCODER)(HREDEncoder)
declares(onmt.decoders, 'register_decoder("hred")', why="the public decoder registry: "
         "HRED's decoder, the stock LSTM decoder with the context state in every step")
if HRED_DECODER not in onmt.decoders.str2dec:
    onmt.decoders.register_decoder(HRED_DECODER)(HREDDecoder)


@replaces(onmt.model_builder, "build_task_specific_model", why="there is no model "
          "registry; `build_base_model` (train and translate) calls it through the module")
def build_task_specific_model(model_opt, vocabs):
    if getattr(model_opt, "encoder_type", None) == MIRROR_ENCODER:
        return build_mirror(model_opt, vocabs)
    if getattr(model_opt, "encoder_type", None) == HRED_ENCODER:
        return build_hred(model_opt, vocabs)
    return original(onmt.model_builder, "build_task_specific_model")(model_opt, vocabs)


def build_mirror(model_opt, vocabs):
    src, tgt = vocabs["src"], vocabs["tgt"]
    if src.ids_to_tokens != tgt.ids_to_tokens:
        raise MirrorError("Mirror reads x and y with one utterance encoder and decodes "
                          "both: build the vocabulary with -share_vocab")
    if QUERY_TOKEN not in tgt.ids_to_tokens:
        raise MirrorError("the vocabulary lacks %s: build it with -transforms "
                          "mirror_triple" % QUERY_TOKEN)
    if model_opt.copy_attn or model_opt.share_decoder_embeddings:
        raise MirrorError("Mirror does not support -copy_attn or -share_decoder_embeddings"
                          " (use -mirror_share_dec_embeddings / -mirror_share_generators)")
    return MirrorModel(MirrorConfig.from_opt(model_opt, tgt))


def build_hred(model_opt, vocabs):
    """The stock seq2seq builder (HREDEncoder + HREDDecoder), then the encoder
    learns which vocabulary ids separate turns (they are not weights)."""
    src = vocabs["src"]
    if QUERY_TOKEN not in src.ids_to_tokens or TURN_TOKEN not in src.ids_to_tokens:
        raise MirrorError("HRED splits src into turns at %s and %s: build the vocabulary "
                          "with -transforms mirror_triple" % (TURN_TOKEN, QUERY_TOKEN))
    model = original(onmt.model_builder, "build_task_specific_model")(model_opt, vocabs)
    model.encoder.set_separators([src[TURN_TOKEN], src[QUERY_TOKEN]])
    return model
