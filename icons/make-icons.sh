#!/bin/sh
# Draws the app and tray icons with ImageMagick (a shield with a key hole
# mark). Run from icons/: sh make-icons.sh. The PNGs are committed; this
# script is how they were made.
set -eu
CONVERT=${CONVERT:-convert}

# shield FILL OUT: a 512x512 shield in FILL with a white key on it.
shield() {
  "$CONVERT" -size 512x512 xc:none \
    -fill "$1" -stroke "$2" -strokewidth 14 \
    -draw "path 'M 256,28 L 456,100 L 456,250 C 456,370 370,446 256,490 C 142,446 56,370 56,250 L 56,100 Z'" \
    -stroke none -fill white \
    -draw "circle 256,200 256,128" \
    -fill "$1" -draw "circle 256,200 256,170" \
    -fill white -draw "roundrectangle 236,250 276,410 8,8" \
    -draw "rectangle 276,340 320,368" \
    -draw "rectangle 276,384 306,408" \
    "$3"
}

shield '#2f4fb5' '#1f3580' /tmp/jit-app-512.png
for s in 32 128 256; do
  "$CONVERT" /tmp/jit-app-512.png -resize ${s}x${s} -depth 8 PNG32:"$( [ $s = 256 ] && echo icon.png || echo ${s}x${s}.png )"
done
cp icon.png 128x128@2x.png

# Tray states: idle (grey), pending (amber), urgent (red, with a badge).
shield '#6b7280' '#374151' /tmp/jit-idle-512.png
shield '#d97706' '#92400e' /tmp/jit-pending-512.png
shield '#dc2626' '#7f1d1d' /tmp/jit-urgent-512.png
"$CONVERT" /tmp/jit-idle-512.png -resize 32x32 -depth 8 PNG32:tray-idle.png
"$CONVERT" /tmp/jit-pending-512.png -resize 32x32 -depth 8 PNG32:tray-pending.png
"$CONVERT" /tmp/jit-urgent-512.png \
  -fill '#fde047' -stroke '#7f1d1d' -strokewidth 16 -draw "circle 420,96 420,10" \
  -resize 32x32 -depth 8 PNG32:tray-urgent.png
rm -f /tmp/jit-*-512.png
