"""ComfyUI-LandmarkTalk: lip-synced talking faces, trained per person.

ComfyUI reads ``comfy_entrypoint`` (V3 API). Nothing heavy happens on import: the node classes,
torch models and folder registration load when ComfyUI calls the entry point.
"""

WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    from .nodes import LandmarkTalkExtension

    return LandmarkTalkExtension()
