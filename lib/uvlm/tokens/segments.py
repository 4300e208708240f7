"""Segment ids carried by every token (docs/method.md §1-2).

U sequence: [system][boi image eoi][instruction][answer]
G sequence: [system][prompt boi][image eoi]  -> system, instruction, output
"""
SYSTEM, IMAGE, INSTRUCTION, OUTPUT = 0, 1, 2, 3
NAMES = {SYSTEM: "system", IMAGE: "image", INSTRUCTION: "instruction", OUTPUT: "output"}
U_SEGMENTS = (SYSTEM, IMAGE, INSTRUCTION, OUTPUT)
G_SEGMENTS = (SYSTEM, INSTRUCTION, OUTPUT)
