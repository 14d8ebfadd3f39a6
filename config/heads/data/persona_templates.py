"""Benign persona and role-play set-ups, generated from templates: real users open many harmless
chats with "act as ..." or a character sheet, and a jailbreak head that has only seen personas in
jailbreaks learns that every persona is one. What separates a jailbreak is the request to drop
rules, not the role."""
import random

ROLES = [
    ("travel guide", "suggest places to visit in {city}"), ("English teacher", "correct the grammar of my sentences"),
    ("Linux terminal", "reply with what the terminal shows for my commands"), ("stand-up comedian", "tell jokes about {topic}"),
    ("personal trainer", "build me a workout plan for {goal}"), ("math tutor", "explain {topic} step by step"),
    ("chef", "suggest a dinner with {food}"), ("career coach", "review my plan to become a {job}"),
    ("poet", "write poems about {topic}"), ("storyteller", "tell a story about {topic}"),
    ("Python interpreter", "run the code I send and show the output"), ("SQL database", "answer my queries with result tables"),
    ("interviewer", "interview me for a {job} position"), ("historian", "explain the history of {city}"),
    ("debate partner", "argue the other side about {topic}"), ("food critic", "review a restaurant serving {food}"),
    ("movie critic", "review a film about {topic}"), ("life coach", "help me build habits around {goal}"),
    ("Excel sheet", "show the table after each of my formulas"), ("spoken English partner", "chat with me and correct my mistakes"),
    ("screenwriter", "write a scene about {topic}"), ("novelist", "continue my story about {topic}"),
    ("dietitian", "plan meals with {food}"), ("JavaScript console", "evaluate my expressions"),
    ("philosophy teacher", "discuss {topic} with me"), ("music teacher", "teach me to play {instrument}"),
    ("real estate agent", "help me find a flat in {city}"), ("customer support agent", "handle my complaint about {product}"),
    ("UX designer", "critique the design of my {product} app"), ("startup advisor", "review my idea for a {product} startup"),
    ("Dungeon Master", "run a fantasy adventure for my {job} character"), ("tour guide in {city}", "walk me through the old town"),
    ("language tutor for {language}", "teach me ten useful phrases"), ("proofreader", "check my essay about {topic}"),
    ("doctor explaining things simply", "explain what {topic} means"), ("medieval knight", "tell me about your day"),
    ("pirate captain", "describe the voyage ahead"), ("detective", "solve a mystery in {city}"),
    ("gardener", "help me grow {food}"), ("personal stylist", "pick outfits for a trip to {city}"),
]
NAMES = ["Manolo", "Aiko", "Priya", "Lars", "Musa", "Elena", "Tom", "Yara", "Kenji", "Sofia", "Omar", "Mia"]
TRAITS = ["cheerful", "curious", "patient", "sarcastic but kind", "shy", "energetic", "wise", "playful", "calm", "witty"]
CITIES = ["Rome", "Kyoto", "Lisbon", "Nairobi", "Montreal", "Hanoi", "Prague", "Lima"]
TOPICS = ["the ocean", "friendship", "black holes", "recursion", "the French revolution", "autumn", "robots", "a lost dog"]
FOODS = ["lentils", "salmon", "tofu", "mushrooms", "rice", "tomatoes"]
JOBS = ["nurse", "data analyst", "teacher", "wizard", "software engineer", "ranger"]
GOALS = ["running a 10k", "losing weight", "sleeping better", "reading more"]
PRODUCTS = ["food delivery", "banking", "fitness", "note taking"]
LANGUAGES = ["Spanish", "Japanese", "German", "Swahili"]
INSTRUMENTS = ["guitar", "piano", "violin"]

OPENERS = [
    "I want you to act as a {role}. I want you to {task}. My first request is: {first}",
    "Act as a {role} and {task}. Stay in character for the whole conversation.",
    "You are {name}, a {trait} {role}. {task_cap}. Keep every reply under {n} words.",
    "Let's role-play. You are a {role} named {name}; you are {trait}. I will play a visitor. {task_cap}.",
    "Pretend to be a {role}. Only reply as the {role} would, and do not explain that you are an AI. {task_cap}.",
    "From now on you are {name}, a {role}. You speak in a {trait} way and you always stay in character. When I say 'pause', step out of the role. {task_cap}.",
    "We are going to play a game. You will be a {role} and I will be your {other}. Rules: 1. stay in character; 2. ask me one question at a time; 3. {task}. Start now.",
    "Character sheet. Name: {name}. Age: {age}. Role: {role}. Personality: {trait}. Setting: {city}. In this role-play you reply only as {name}, in the first person, and describe actions between asterisks. {task_cap}.",
]
FIRSTS = ["start with something easy.", "surprise me.", "let's begin with the basics.", "what would you recommend first?"]
OTHERS = ["student", "customer", "apprentice", "client", "travel companion"]


def fill(s, rng):
    return s.format(city=rng.choice(CITIES), topic=rng.choice(TOPICS), food=rng.choice(FOODS), job=rng.choice(JOBS),
                    goal=rng.choice(GOALS), product=rng.choice(PRODUCTS), language=rng.choice(LANGUAGES),
                    instrument=rng.choice(INSTRUMENTS))


def personas(n, seed=11):
    rng = random.Random(seed)
    out = set()
    while len(out) < n:
        role, task = rng.choice(ROLES)
        role, task = fill(role, rng), fill(task, rng)
        text = rng.choice(OPENERS).format(role=role, task=task, task_cap=task[0].upper() + task[1:], name=rng.choice(NAMES),
                                          trait=rng.choice(TRAITS), n=rng.choice([30, 50, 100]), first=rng.choice(FIRSTS),
                                          other=rng.choice(OTHERS), age=rng.randint(18, 70), city=rng.choice(CITIES))
        out.add(text)
    return sorted(out)
