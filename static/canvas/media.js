// Image and audio previews: artifacts that a node outputs, as thumbnails loaded from the
// artifact route (one <img> per artifact, kept in `images`) and one audio player at a time.

export function artifactUrl(ref) {
  return `/api/v1/artifacts/${ref.id}`;
}

export function previewRefs(node, kind) {
  // The node's outputs that are artifacts of this kind ("image", "audio").
  const outputs = node.fbState?.outputs || {};
  return Object.values(outputs).filter((v) => v && typeof v === "object" && v.kind === kind && v.id);
}

export function imageFor(images, ref, redraw) {
  // images: {artifact id: HTMLImageElement}; redraw() once a new one has loaded.
  let img = images[ref.id];
  if (!img) {
    img = images[ref.id] = new Image();
    img.onload = redraw;
    img.src = artifactUrl(ref);
  }
  return img;
}

export function isPlaying(audio, ref) {
  return !!audio && audio.fbId === ref.id && !audio.paused;
}

export function toggleAudio(audio, ref, redraw) {
  // Play or pause ref, stopping any other: the player now in use (an HTMLAudioElement).
  if (audio && audio.fbId === ref.id) {
    if (audio.paused) audio.play();
    else audio.pause();
    return audio;
  }
  audio?.pause();
  const player = new Audio(artifactUrl(ref));
  player.fbId = ref.id;
  player.onpause = player.onplay = redraw;
  player.play();
  return player;
}
