"""Built-in text for synthetic conversations: hand-written sentences, a template generator and
backchannels. Everything is drawn from a numpy Generator, so text is deterministic from a seed.

The hand-written sentences are chosen for phonetic variety (many bilabials, rounded and open
vowels) and everyday small talk; the templates combine word lists into several thousand further
statements, questions and answers.
"""

from __future__ import annotations

import numpy as np

SENTENCES: tuple[str, ...] = (
    "Maybe we could meet at the museum on Monday.",
    "My brother bought a blue bicycle last month.",
    "Who wants more soup before it gets cold?",
    "The moon looked huge over the harbour last night.",
    "I think the bakery opens at seven.",
    "Do you remember the name of that movie?",
    "We walked all the way to the top of the hill.",
    "Please pass me the map, it's in the bag.",
    "Honestly, I would rather stay home and read.",
    "The kids built a snowman in the park.",
    "Good morning, how did you sleep?",
    "That sounds like a wonderful plan.",
    "I'm not sure, but it might rain later.",
    "Our garden is full of tomatoes this year.",
    "Could you show me how the new phone works?",
    "We should book the tickets before they sell out.",
    "My grandmother makes the best apple pie.",
    "The meeting moved to Thursday afternoon.",
    "I usually go running before breakfast.",
    "Look at those boats out on the water.",
    "It took us two hours to find a parking spot.",
    "The music was so loud we couldn't talk.",
    "Would you like a cup of tea or coffee?",
    "Bob and Pam moved to a farm by the sea.",
    "You know, I never thought about it that way.",
    "The new school is much bigger than the old one.",
    "We need milk, bread, and maybe some butter.",
    "The robot picked up the box and put it on the shelf.",
    "Tomorrow is supposed to be warm and sunny.",
    "I lost my umbrella on the bus again.",
    "She plays the piano beautifully.",
    "The food at that place is really good.",
    "Let me think about it for a moment.",
    "Why do you always pick the window seat?",
    "It was a beautiful morning, so we went to the beach.",
    "My computer keeps freezing when I open the browser.",
    "The puppy sleeps most of the afternoon.",
    "We painted the bedroom a pale blue.",
    "Have you tried the new noodle place downtown?",
    "I'll call you when I'm on my way.",
    "The mountains were covered in fog.",
    "What time does the movie begin?",
    "Mom made pancakes for the whole family.",
    "I prefer books to podcasts, most of the time.",
    "The bridge was closed, so we took the ferry.",
    "Everybody clapped when the band came back on stage.",
    "You should wear a warm coat today.",
    "I'm looking for a good recipe for pumpkin soup.",
    "The library has a quiet room upstairs.",
    "He won the match in the final minute.",
    "Please remind me to water the plants.",
    "We saw a whale jump right next to the boat.",
    "My favourite season is autumn.",
    "Could we move the meeting to noon?",
    "The train was full, so I stood all the way.",
    "That's a lovely photo of your family.",
    "I'd love to visit Japan one day.",
    "The shop on the corner sells fresh fruit.",
    "My phone battery is almost empty.",
    "Do you want to come over for dinner on Friday?",
    "The baby finally fell asleep.",
    "Our team finished the project early.",
    "It's been ages since we last spoke.",
    "I bumped into an old friend at the market.",
    "Those shoes look very comfortable.",
    "We watched the sun go down from the balcony.",
    "I need to fix the wheel on my bike.",
    "The museum was much smaller than I expected.",
    "Would you mind opening the window a little?",
    "I'm going to make some popcorn.",
    "The bus stop moved across the road.",
    "My boss wants the report by Monday morning.",
    "Wow, you really did a great job.",
    "The soup needs a pinch more salt.",
    "It's too hot to go for a walk right now.",
    "How was your trip to the mountains?",
    "I can't believe how quickly the year went by.",
    "My cousin is moving to Boston in June.",
    "We're planning a small party for her birthday.",
    "The cat knocked a cup off the table.",
    "Let's meet by the fountain at two.",
    "I forgot my keys at the office.",
    "The story had a really surprising ending.",
    "You should try the mushroom pizza.",
    "We were playing board games until midnight.",
    "My neighbour grows beautiful purple flowers.",
    "Remember to bring your passport.",
    "I think the blue one suits you better.",
    "The printer is out of paper again.",
    "We took a boat to the small island.",
    "Maybe next time we can bring the kids.",
    "The power went out during the storm.",
    "I'm reading a book about the ocean.",
    "Two of my friends play in a band.",
    "Do you know where the post office is?",
    "Our flight was delayed by three hours.",
    "It smells amazing in the kitchen.",
    "Please be careful, the floor is wet.",
    "I moved the boxes into the basement.",
    "The view from the roof is spectacular.",
    "What would you do with a free afternoon?",
    "Mm, I'm not so sure about that.",
    "Oh, that's a good point.",
    "Well, it depends on the weather.",
    "Yes, I'd be happy to help.",
    "No problem at all, it was my pleasure.",
    "I see what you mean.",
    "That reminds me of a funny story.",
    "So, what happened next?",
    "Really? I had no idea.",
    "We should probably get going soon.",
    "Thank you so much for the lovely evening.",
    "I'm sorry, could you say that again?",
    "Let's talk about it over lunch.",
    "I was hoping you would ask that.",
    "It's a bit complicated, to be honest.",
    "My brother is a doctor at the hospital.",
    "The new bridge opens in the summer.",
    "We ate mango and papaya on the beach.",
    "The puppet show made everybody laugh.",
    "Put the bowl back in the cupboard, please.",
    "Who knew it would be this much fun?",
    "My room is a mess, but I'll tidy it up.",
    "Bees buzz around the plum tree in May.",
    "Would you prefer the morning or the evening?",
    "The blue balloon floated up over the roofs.",
    "Peter made a map of the whole building.",
    "I couldn't move my arm after the gym.",
    "Maybe we should open a small bookshop.",
    "The wood smoke smelled wonderful.",
    "Move the lamp a bit more to the left.",
    "The boots were too big for my feet.",
    "I bought two pounds of apples at the market.",
    "Please put the milk back in the fridge.",
    "I'm happy you could make it today.",
    "We'll be back by about five o'clock.",
    "You always know how to make me laugh.",
    "That was the best meal I've had in months.",
    "My mother taught me how to swim.",
    "The pool was cool and very quiet.",
    "I'm about to go for a quick walk.",
    "The room was full of balloons and music.",
    "Who is going to pick up the food?",
)

_SUBJECTS = (
    "I",
    "We",
    "My sister",
    "My brother",
    "My neighbour",
    "Our teacher",
    "My friend Maria",
    "Everyone at work",
    "My dad",
    "My mum",
    "The whole team",
    "Paul",
    "Emma",
    "My cousin",
    "Our manager",
    "The kids",
)
_PAST = (
    "went to the market",
    "baked some bread",
    "watched a movie about whales",
    "fixed the old bike",
    "painted the fence",
    "visited the museum",
    "cooked a huge pot of soup",
    "played football in the park",
    "moved to a new apartment",
    "found a lovely little cafe",
    "built a bookshelf",
    "took the boat to the island",
    "planted some tomatoes",
    "learned to play the drums",
    "went hiking in the mountains",
    "bought a new computer",
    "adopted a puppy",
    "made pizza from scratch",
    "booked a trip to Rome",
    "finished a long book",
)
_TIMES = (
    "yesterday",
    "last weekend",
    "this morning",
    "on Tuesday",
    "after lunch",
    "last summer",
    "a few days ago",
    "on my birthday",
    "before the storm",
    "last night",
    "two weeks ago",
    "over the holidays",
)
_OPINIONS = (
    "It was really fun.",
    "Honestly, it was a bit boring.",
    "It was much better than I expected.",
    "It was hard work, but worth it.",
    "Everybody loved it.",
    "I would definitely do it again.",
    "It took much longer than we planned.",
    "It was a complete mess, but we laughed a lot.",
    "It was quiet and peaceful.",
    "The weather was perfect for it.",
)
_TOPICS = (
    "the new park",
    "electric cars",
    "the football match",
    "that new bakery",
    "working from home",
    "the music festival",
    "the city buses",
    "learning a new language",
    "the museum exhibition",
    "robots",
    "the weather lately",
    "the summer holidays",
    "the new library",
    "cooking at home",
    "the mountain trail",
)
_FOODS = (
    "pumpkin soup",
    "mushroom pizza",
    "blueberry pie",
    "noodles",
    "mango ice cream",
    "fish and chips",
    "spicy curry",
    "tomato pasta",
    "lemon cake",
    "plum jam",
)
_PLACES = (
    "Boston",
    "Paris",
    "the seaside",
    "the old market",
    "the mountains",
    "Rome",
    "the zoo",
    "the botanical garden",
    "the harbour",
    "Tokyo",
    "the museum",
    "the lake",
)
_QUESTIONS = (
    "Have you ever been to {place}?",
    "What do you think about {topic}?",
    "Do you like {food}?",
    "Did you hear about {topic}?",
    "How often do you go to {place}?",
    "Would you try {food}?",
    "What did you do {time}?",
    "Is {topic} popular where you live?",
)
_ANSWERS = (
    "Yes, I went there {time}.",
    "No, not really, but I'd like to.",
    "I think {topic} is fascinating.",
    "Hmm, I'm not a big fan of {food}.",
    "Oh yes, {food} is my favourite.",
    "I heard about {topic} {time}.",
    "Maybe, if the weather is nice.",
    "To be honest, I prefer {place}.",
)
_STATEMENTS = (
    "{subject} {past} {time}.",
    "{subject} {past} {time}. {opinion}",
    "{subject} {past}, and it was lovely.",
    "I told you {subject_lc} {past}, right?",
    "Guess what? {subject} {past} {time}.",
)

# (text shown in the metadata, text given to espeak; [[...]] is espeak phoneme code)
BACKCHANNELS: tuple[tuple[str, str], ...] = (
    ("mm-hm", "[[m,m'hm]]"),
    ("mhm", "[[m'hm]]"),
    ("uh-huh", "[[,V'hV]]"),
    ("yeah", "yeah"),
    ("right", "right"),
    ("okay", "okay"),
    ("I see", "I see"),
    ("sure", "sure"),
    ("oh, really?", "oh, really?"),
    ("wow", "wow"),
    ("true", "true"),
    ("exactly", "exactly"),
    ("oh nice", "oh nice"),
    ("hmm", "[[hm]]"),
    ("yes", "yes"),
)


def _pick(rng: np.random.Generator, items) -> str:
    return items[int(rng.integers(len(items)))]


def generated_sentence(rng: np.random.Generator, kind: str = "statement") -> str:
    """A sentence from the templates: ``kind`` is statement, question or answer."""
    fill = {
        "subject": _pick(rng, _SUBJECTS),
        "past": _pick(rng, _PAST),
        "time": _pick(rng, _TIMES),
        "opinion": _pick(rng, _OPINIONS),
        "topic": _pick(rng, _TOPICS),
        "food": _pick(rng, _FOODS),
        "place": _pick(rng, _PLACES),
    }
    first = fill["subject"].split()[0]
    lower = first in ("My", "Our", "The", "Everyone", "We")
    fill["subject_lc"] = fill["subject"][0].lower() + fill["subject"][1:] if lower else fill["subject"]
    templates = {"statement": _STATEMENTS, "question": _QUESTIONS, "answer": _ANSWERS}[kind]
    return _pick(rng, templates).format(**fill)


def sample_turn_text(rng: np.random.Generator, max_sentences: int = 3, after_question: bool = False) -> str:
    """Text of one conversational turn: 1..max_sentences sentences, answering if asked."""
    n = int(rng.integers(1, max_sentences + 1))
    parts = []
    if after_question and rng.random() < 0.7:
        parts.append(generated_sentence(rng, "answer"))
    while len(parts) < n:
        r = rng.random()
        if r < 0.5:
            parts.append(_pick(rng, SENTENCES))
        elif r < 0.8:
            parts.append(generated_sentence(rng, "statement"))
        else:
            parts.append(generated_sentence(rng, "question"))
    return " ".join(parts)


def sample_backchannel(rng: np.random.Generator) -> tuple[str, str]:
    """(display text, espeak text) of a short listener response."""
    return BACKCHANNELS[int(rng.integers(len(BACKCHANNELS)))]
