"""Seeded text a person would type: questions on everyday topics, follow-ups, class work.

Benign prompts have to be as unlike each other as real ones, or the simulator would accuse
its own humans of templating: each prompt combines a frame (one of ~90 over 15 topics) with
several slot fills, an optional context sentence and closer, and the writer's own habits
(lower case, no final punctuation, typos, a habitual "think step by step").
Everything is drawn from the ``random.Random`` passed in; nothing else varies the output.
"""

from __future__ import annotations

import random
import re
from typing import NamedTuple

# fmt: off
_V: dict[str, tuple[str, ...]] = {
    "ingredient": ("chickpeas", "spinach", "leftover rice", "eggs", "feta", "salmon", "tofu",
                   "sweet potatoes", "ground beef", "mushrooms", "lentils", "zucchini",
                   "chicken thighs", "coconut milk", "black beans", "halloumi", "cabbage"),
    "dish": ("lasagna", "banana bread", "pad thai", "risotto", "chili", "sourdough", "fried rice",
             "shakshuka", "carbonara", "dal", "meatballs", "pancakes", "curry"),
    "texture_bad": ("soggy", "dry", "rubbery", "dense", "mushy", "burnt on the bottom"),
    "diet": ("vegetarian", "vegan", "gluten-free", "low-carb", "high-protein", "dairy-free"),
    "city": ("Lisbon", "Osaka", "Chicago", "Berlin", "Mexico City", "Edinburgh", "Hanoi",
             "Toronto", "Marrakesh", "Melbourne", "Prague", "Bogota", "Seoul", "Austin"),
    "country": ("Portugal", "Japan", "Peru", "Norway", "Vietnam", "Morocco", "Greece",
                "New Zealand", "Croatia", "Mexico", "Iceland", "Thailand", "Kenya"),
    "month": ("January", "March", "April", "June", "August", "October", "November", "December"),
    "activity": ("hiking", "a beach week", "a ski trip", "a business trip", "backpacking",
                 "a wedding"),
    "interest": ("food markets", "old churches", "street art", "hiking", "wine", "museums",
                 "live music", "history"),
    "nationality": ("US", "Indian", "Brazilian", "German", "Nigerian", "Canadian", "Filipino"),
    "lang": ("Python", "JavaScript", "TypeScript", "Java", "Go", "Rust", "C#", "Kotlin", "SQL"),
    "error": ("a KeyError", "'undefined is not a function'", "a NullPointerException",
              "'index out of range'", "a segfault", "'cannot borrow as mutable'", "a timeout",
              "'module not found'", "a 403 from the API"),
    "code_action": ("loop over a dict and delete keys", "parse a date string",
                    "call an async function from a sync one", "read a large CSV",
                    "sort a list of objects by two fields", "connect to postgres"),
    "code_task": ("removes duplicates from a list but keeps the order",
                  "retries an HTTP call with exponential backoff", "flattens a nested list",
                  "validates an email address", "reads a config file with defaults",
                  "counts words in a text file", "merges two sorted arrays",
                  "debounces a function call"),
    "concept": ("a list", "a tuple", "a promise", "a thread", "an interface", "a closure",
                "a shallow copy", "an index"),
    "concept2": ("an array", "a set", "a callback", "a process", "an abstract class",
                 "a generator", "a deep copy", "a foreign key"),
    "tool": ("webpack", "gradle", "cargo", "pip", "npm", "docker", "maven", "vite"),
    "package": ("react", "numpy", "spring", "tokio", "django", "pandas", "typescript"),
    "snippet": ("x = [i*i for i in range(10) if i % 2]",
                "const f = a => a.reduce((s, v) => s + v, 0)",
                "SELECT name, COUNT(*) FROM orders GROUP BY name HAVING COUNT(*) > 3",
                "for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:5]: print(k, v)",
                "git rebase -i HEAD~3", "awk -F, '{s+=$3} END {print s}' data.csv"),
    "recipient": ("landlord", "manager", "professor", "neighbour", "client", "coworker",
                  "kid's teacher", "HR department", "insurance company"),
    "request_thing": ("a deadline extension", "a day off next Friday", "a refund",
                      "feedback on my project", "a reference letter", "a repair in the kitchen",
                      "a meeting next week"),
    "tone": ("friendly", "professional", "less passive-aggressive", "more confident", "formal",
             "warm", "concise"),
    "draft": ("hey, just checking if you saw my last email?",
              "I need the report by tomorrow or we will miss the deadline",
              "sorry for the late reply, things have been crazy",
              "per my last message, the invoice is still unpaid"),
    "event": ("a wedding invitation", "a job offer", "a side project", "a dinner party",
              "extra weekend shifts"),
    "name": ("Sam", "Priya", "Jonas", "Aisha", "Marco", "Mei", "Olu", "Grace", "Tomás", "Lena"),
    "favor": ("watering my plants", "covering my shift", "the birthday gift", "helping us move",
              "the advice last week"),
    "complaint": ("the delivery was late", "my dog barks too much", "the invoice is wrong",
                  "I missed the meeting", "the work wasn't finished"),
    "symptom": ("a headache", "lower back pain", "a dry cough", "itchy eyes", "heartburn",
                "sore knees", "trouble sleeping", "dizziness"),
    "activity2": ("running", "a flu shot", "lifting weights", "a long flight", "eating dairy",
                  "starting a new medication", "cycling"),
    "sleep_issue": ("I work night shifts", "my partner snores", "I drink coffee late",
                    "I check my phone in bed", "it's too hot"),
    "nutrient": ("protein", "vitamin D", "iron", "fiber", "calcium", "water"),
    "gender": ("woman", "man", "person"),
    "body_pain": ("neck pain", "a stiff back", "tight hips", "wrist pain", "shoulder pain"),
    "school_topic": ("fractions", "the water cycle", "the French Revolution", "plate tectonics",
                     "supply and demand", "the Pythagorean theorem", "cell division",
                     "the causes of World War I", "compound interest", "photosynthesis"),
    "grade": ("5th grade", "middle school", "high school", "my first year of college"),
    "essay_topic": ("social media and teenagers", "renewable energy", "the ethics of zoos",
                    "remote work", "a book that changed my mind", "homework bans"),
    "science_a": ("weather", "an atom", "a virus", "speed", "mass", "an element", "DNA"),
    "science_b": ("climate", "a molecule", "a bacterium", "velocity", "weight", "a compound",
                  "RNA"),
    "math_fact": ("dividing by a fraction is the same as multiplying by its reciprocal",
                  "a negative times a negative is positive", "0.999 repeating equals 1",
                  "the angles of a triangle add up to 180 degrees", "you can't divide by zero"),
    "debt": ("car loan", "student loan", "credit card", "personal loan", "mortgage"),
    "account_type": ("Roth IRA", "401k", "high-yield savings account", "index fund", "HSA", "ISA",
                     "certificate of deposit"),
    "finance_term": ("APR vs APY", "dollar-cost averaging", "an ETF", "a bond yield", "inflation",
                     "a credit score", "capital gains tax", "an annuity"),
    "finance_move": ("refinance my mortgage", "buy a used car with cash", "lease instead of buy",
                     "move my savings to bonds", "open a second credit card"),
    "fitness_goal": ("losing fat", "building muscle", "a first 10k", "better posture",
                     "more flexibility"),
    "equipment": ("dumbbells", "a resistance band", "bodyweight", "a kettlebell", "a pull-up bar"),
    "distance": ("5k", "10k", "a half marathon"),
    "exercise": ("squatting deep", "running every day", "deadlifts", "burpees", "planks"),
    "body_part": ("knees", "lower back", "shoulders", "ankles", "wrists"),
    "home_problem": ("leaky faucet", "running toilet", "squeaky door", "clogged drain",
                     "tripped breaker that keeps tripping", "drafty window", "cracked tile"),
    "plant": ("tomatoes", "a fiddle leaf fig", "basil", "garlic", "roses", "a monstera",
              "strawberries", "peppers"),
    "region": ("the UK", "Texas", "southern Spain", "Ontario", "the Pacific Northwest",
               "Queensland"),
    "color": ("yellow", "brown at the edges", "pale", "black spots", "curly"),
    "surface": ("a cast iron pan", "grout", "a suede couch", "hardwood floors",
                "a stainless steel sink", "white sneakers"),
    "pet": ("dog", "cat", "rabbit", "parrot", "puppy", "kitten"),
    "pet_behavior": ("scratching the couch", "barking at night", "pulling on the leash",
                     "peeing inside", "chewing cables", "waking me up at 5am"),
    "poem_subject": ("growing older", "the sea", "our first apartment", "coffee", "autumn",
                     "friendship"),
    "relation": ("mom", "dad", "sister", "best friend", "grandma", "wife", "husband", "partner",
                 "son", "daughter"),
    "business": ("bakery", "dog grooming shop", "bike repair shop", "coffee truck",
                 "bookkeeping firm", "yoga studio"),
    "story_premise": ("a lighthouse keeper", "two rival chefs", "a time loop at a wedding",
                      "a detective who can't read", "a town without music"),
    "book": ("Sapiens", "Atomic Habits", "1984", "The Great Gatsby", "Thinking, Fast and Slow",
             "Frankenstein"),
    "phrase": ("nice to meet you", "where is the train station", "I'm allergic to nuts",
               "could we get the bill", "congratulations on the baby"),
    "language": ("Spanish", "Japanese", "German", "French", "Italian", "Korean", "Portuguese"),
    "word_pair": ("ser and estar", "por and para", "wa and ga", "kennen and wissen",
                  "tu and vous"),
    "sentence": ("yo soy cansado hoy", "ich habe nach Hause gegangen",
                 "je suis allé au magasin hier et j'ai acheter du pain"),
    "interview_q": ("tell me about a time you failed", "why are you leaving your current job",
                    "what's your biggest weakness", "where do you see yourself in five years"),
    "job": ("data analyst", "nurse", "product manager", "junior developer", "teacher", "sales",
            "UX designer"),
    "bullet": ("Responsible for managing social media accounts",
               "Helped with the migration to the new CRM", "Worked on customer tickets"),
    "situation": ("just started a new job", "have two kids", "am trying to save money",
                  "am new to this", "recently moved", "am studying part time"),
}
_NUMBERS: dict[str, tuple[int, int]] = {
    "minutes": (15, 60), "people": (2, 8), "days": (2, 12), "temp": (160, 230), "money": (40, 900),
    "n": (3, 10), "words": (500, 2500), "rate": (3, 24), "salary": (28, 140), "weeks": (4, 16),
    "age": (19, 67), "age2": (1, 14), "percent": (5, 20), "years": (1, 6),
}
# fmt: on


class _Slots(dict[str, str]):
    """Fills ``{slot}`` on first use; ``slot2``/``slot3`` draw a different value of ``slot``."""

    def __init__(self, rng: random.Random) -> None:
        super().__init__()
        self.rng = rng

    def __missing__(self, key: str) -> str:
        rng = self.rng
        if key in _NUMBERS:
            value = str(rng.randint(*_NUMBERS[key]))
            if key == "money":
                value = f"${value}"
            elif key == "salary":
                value = f"${value}k"
        else:
            base = key.rstrip("23") if key not in _V else key
            choices = _V[base] if base in _V else _MORE[base]
            value = rng.choice(choices)
            for _ in range(3):  # ingredient2 differs from ingredient, mostly
                if value not in self.values():
                    break
                value = rng.choice(choices)
        self[key] = value
        return value


_CHOICE = re.compile(r"\[([^\[\]]*)\]")
_SPACES = re.compile(r" {2,}")
_LOOSE = re.compile(r" +([.,?!])")


def expand(rng: random.Random, frame: str) -> str:
    """``frame`` with every ``[a|b|c]`` replaced by one of its options (an option may be empty):
    one frame stands for the many ways people phrase the same question."""
    if "[" not in frame:
        return frame
    text = _CHOICE.sub(lambda m: rng.choice(m.group(1).split("|")), frame)
    # An empty option leaves a double space or a space before punctuation behind.
    return _LOOSE.sub(r"\1", _SPACES.sub(" ", text)).strip()


def fill(rng: random.Random, frame: str) -> str:
    """``frame`` with its ``[a|b]`` phrasings chosen and every ``{slot}`` drawn."""
    return expand(rng, frame).format_map(_Slots(rng))


# fmt: off
TOPICS: dict[str, tuple[str, ...]] = {
    "cooking": (
        "[What can I make|Any ideas for|What should I cook|Help me come up with something] "
        "[for dinner|tonight|for lunch|] with {ingredient}, {ingredient2} and {ingredient3}? "
        "[I have about {minutes} minutes.|Only got {minutes} min.|Nothing too fancy.|]",
        "How do I [keep|stop] {dish} from [getting|turning] {texture_bad} when I reheat it "
        "[the next day|in the microwave|]?",
        "[Can you give me|I need|Looking for] a {diet} [version of|take on|recipe for] {dish} "
        "[for {people} people|that feeds {people}|for a dinner party]",
        "I['m out of| ran out of| don't have] {ingredient}. What [can I use instead|could I "
        "substitute|works as a replacement] in {dish}?",
        "[Is it safe to eat|Is it ok to eat|Can I still eat|Is it fine to use] cooked "
        "{ingredient} [that's been|left] in the fridge for {days} days?",
        "My {dish} [always comes out|keeps turning out|ends up] {texture_bad}. [I bake it at "
        "{temp} degrees.|I follow the recipe exactly.|No idea why.] What am I doing wrong?",
        "[Plan|Make me|Can you put together] [a week of|five days of|some] {diet} lunches I "
        "can prep on [Sunday|the weekend] [for about {money} total|on a budget|]",
    ),
    "travel": (
        "[I have|We've got|Spending] {days} days in {city} in {month}[.|,] What [should I not "
        "miss|are the must-sees|would you recommend|should we do]?",
        "[Is it cheaper|Is it better|What's faster] [to take the train or fly|by train or by "
        "plane] from {city} to {city2}?",
        "What should I pack for {activity} in {country} [in {month}|next month|this winter]?",
        "Do I need a visa [to visit|for|to travel to] {country} with a {nationality} passport"
        "[?| for {days} days?| as a tourist?]",
        "[Suggest|Plan|Sketch out] a {days}-day [route|itinerary|trip] [around|through] "
        "{country} for [someone who loves|a couple into|a family that likes] {interest}",
        "[Where should we stay|Best area to stay|Which neighbourhood] in {city} [with|for] "
        "{people} people [and a budget of {money} a night|on a budget|with kids]?",
    ),
    "code": (
        "[Why does|How come] my {lang} code [throw|give me|raise] {error} when I {code_action}?",
        "[How do I|What's the best way to|Is there a fast way to] {code_action} in {lang}"
        "[ without it being super slow|?|]",
        "[Can you explain what this does|What does this do|Explain this snippet|What is this "
        "doing]?\n\n{snippet}",
        "[What's the difference between|When should I use|Explain] {concept} [and|vs|versus] "
        "{concept2} in {lang}",
        "My {tool} build [fails|breaks|started failing] with {error} [since I upgraded|after "
        "updating|after bumping] {package}. [Any idea why?|How do I fix it?|Help]",
        "[Write|Can you write|I need] a {lang} function that {code_task}[.| with tests.| "
        "and explain it.]",
        "[Is there a cleaner way to write this|How would you write this|Can you clean this up] "
        "in {lang}? {snippet}",
    ),
    "email": (
        "[Help me write|Draft|Can you write] an email to my {recipient} asking for "
        "{request_thing}[. Keep it {tone}.|, {tone} tone please.|.]",
        "Can you make this [sound|read] more {tone}? \"{draft}\"",
        "How do I [politely|nicely|gracefully] [turn down|decline|say no to] {event} without "
        "[burning bridges|upsetting] my {recipient}?",
        "[Draft|Write] a [short|quick|heartfelt] [thank-you note|thank you message] to {name} "
        "for {favor}",
        "My {recipient} says {complaint}. [Help me reply|How do I respond], {tone} but firm.",
        "[Rewrite|Fix|Edit] this so it's {tone} and [shorter|clearer]: \"{draft}\"",
    ),
    "health": (
        "Is it normal to [get|have|feel] {symptom} after {activity2}?",
        "[Any tips|How can I|What helps] to sleep better when {sleep_issue}?",
        "How much {nutrient} does a {age} year old {gender} [need|need per day|actually need]?",
        "I've had {symptom} for {days} days [now|already|]. [At what point should I|When do I "
        "need to|Should I] see a doctor?",
        "What [stretches|exercises] help with {body_pain} from [sitting at a desk|working "
        "from home|long drives] all day?",
        "Can {activity2} cause {symptom}[, or is that a coincidence|?| or am I imagining it]?",
    ),
    "homework": (
        "[Can you explain|Explain|Help me get] {school_topic} like I'm in {grade}",
        "I [need|have] to write a {words} word essay on {essay_topic}. [How should I "
        "structure it?|Where do I start?|Can you outline it?]",
        "What's the difference between {science_a} and {science_b}[?| in simple terms?]",
        "[Help me understand|Why is it that|I never understood why] {math_fact}",
        "[Give me|Make|Write] {n} practice questions on {school_topic}[, answers at the end|"
        " with solutions|]",
        "My [teacher|tutor|textbook] says {math_fact} but I don't get it. [Can you show me?|"
        "Why?|Explain?]",
    ),
    "finance": (
        "Should I pay off my {debt} at {rate}% or invest the {money} [instead|I have saved]?",
        "How does a {account_type} work and is it worth [opening one|it] at {age}?",
        "I make {salary} a year. [What's a realistic|Help me plan a|How should I do a] "
        "monthly budget [in|living in] {city}?",
        "[Explain|What is|Can you explain] {finance_term} in simple terms",
        "Is it [smart|a good idea|dumb] to {finance_move} right now, or should I wait?",
    ),
    "fitness": (
        "[Make me|Write|I need] a {days}-day plan for {fitness_goal} with only {equipment}",
        "How do I go from [nothing|couch|zero] to running {distance} in {weeks} weeks?",
        "Is {exercise} [bad for|hard on|risky for] my {body_part}?",
        "I'm {age} and want to start {fitness_goal}. [Where do I even begin?|What should "
        "week one look like?|Any advice?]",
    ),
    "home": (
        "How do I fix a {home_problem} [myself|without calling someone|]?",
        "When should I plant {plant} in {region}?",
        "Why [is my|are the leaves on my] {plant} [going|turning] {color}?",
        "What's the best way to clean {surface} without [ruining|damaging|scratching] it?",
        "Do I need a [plumber|pro|handyman] for a {home_problem} or can I do it?",
    ),
    "pets": (
        "My {pet} keeps {pet_behavior}. How do I [get it to stop|stop this|fix this]?",
        "[Which|What] human foods are [dangerous|toxic|bad] for a {pet}?",
        "How often should a {age2} year old {pet} [see the vet|get a checkup]?",
    ),
    "creative": (
        "[Write|Can you write] a [short|funny|sweet] poem about {poem_subject} for my "
        "{relation}'s birthday",
        "[Give me|I need|Brainstorm] {n} name ideas for a {business} in {city}",
        "I'm writing a story about {story_premise}. [Any ideas for a twist?|How should it "
        "end?|What could go wrong for them?]",
        "[Summarize|What's] the main argument of {book}[ in one paragraph|?| in a few lines]",
    ),
    "language": (
        "How do you say '{phrase}' in {language}? [Is it formal?|Is that polite?|]",
        "What's the difference between {word_pair}? [I keep mixing them up.|Never got it.|]",
        "[Can you correct|Is this right,|Fix] my {language}: \"{sentence}\"",
        "[What's a good way to learn|How can I learn|Fastest way to pick up] {language} in "
        "{weeks} weeks before a trip to {city}?",
    ),
    "career": (
        "How should I answer '{interview_q}' [for|in] a {job} interview?",
        "[Can you improve this resume line|Make this resume line stronger|Rewrite my resume "
        "bullet]: '{bullet}'",
        "Is it reasonable to ask for a {percent}% raise after {years} years as a {job}?",
        "I {situation} and I'm thinking about [switching to|retraining as] {job}. [Is it "
        "realistic?|Good idea?|Where do I start?]",
    ),
}
TOPIC_NAMES: tuple[str, ...] = tuple(TOPICS)

_OPENERS = (
    "Quick question.", "Hi!", "Ok so", "Hey,", "Hello there.", "So I was wondering:",
    "I {situation}.", "My {relation} asked me this and I wasn't sure.", "Random one:",
    "[For context|FYI|Background:] I live in {city}.", "Need some help.", "Good morning!",
    "Sorry if this is a dumb question.", "This has been bugging me [all week|for days].",
)
_CONTEXT = (
    "[We're|We are] {people} [people|in the house|adults].", "I'm on a [tight|] budget.",
    "I {situation}.", "[I'm|Im] {age}.", "My {relation} [says|thinks] I'm overthinking it.",
    "[I tried googling|I looked online] but [got confused|everything contradicts].",
    "It's for [next week|this weekend|{month}].", "I live in {city}.",
)
# Concrete circumstances: what makes two people's versions of one question different.
_DETAILS = (
    "[I've|We've] been [trying|meaning] to sort this out since {month}[ and it's driving me "
    "nuts|, no luck so far|].",
    "[Last time|The last time|When] I tried, {mishap}.",
    "[My|Our] {relation} [is coming over|visits|is staying with us] [on {weekday}|next week|"
    "for {days} days], so [timing matters|I want to get it right|no pressure lol].",
    "[For reference|Fwiw|Context:] I [work as a|am a|used to be a] {job}[ and| so] {constraint}.",
    "[Also|Oh and|Btw] {constraint}[.|, if that matters.|, which makes it harder.]",
    "[Ideally|Hopefully] [something|a solution] that works [before|by] {weekday} "
    "[since|because] {constraint}.",
    "[I read|Someone told me|A friend said] {hearsay}[, is that true?|, not sure I believe it.|.]",
    "[Budget is|I can spend|We have] [around|about|max] {money}[ for this|, tops|].",
)
_MORE: dict[str, tuple[str, ...]] = {
    "mishap": ("it went badly", "I made a mess of the kitchen", "my family laughed at me",
               "it took three hours", "nothing happened at all", "I broke something",
               "it worked once and never again", "the neighbours complained",
               "I gave up halfway", "the instructions made no sense"),
    "weekday": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    "constraint": ("I don't have a car", "money is tight this month",
                   "I have zero free time on weekdays", "I'm pretty bad at this stuff",
                   "my back is bad", "English isn't my first language",
                   "I can't stand spicy food", "we share a kitchen with roommates",
                   "my laptop is ancient", "I'm allergic to nuts", "I work nights",
                   "the kids are home all week", "I only have a phone", "I live alone",
                   "I'm on a student budget", "I'm recovering from surgery"),
    "hearsay": ("it's all marketing", "you should never do this in winter",
                "the cheap option is just as good", "it depends mostly on luck",
                "experts changed their minds on this recently", "nobody does it that way anymore",
                "it's way easier than it looks", "it only works with the right tools"),
}
_CLOSERS = (
    "Thanks!", "Keep it short please.", "Bullet points are fine.", "Thanks in advance.",
    "No need for a long answer.", "In plain English please.", "Be honest.", "thx",
    "Give me a few options.", "Appreciate it!", "Examples would help.", "ty",
)
REASONING_HABITS = (
    "Think step by step.", "Explain your reasoning.", "Please think step by step.",
    "Can you explain your reasoning?", "Walk me through your reasoning.",
    "think step by step", "Explain your reasoning please.",
)
# The most widely taught prompting advice, as people append it to any question (issue 13):
# one phrase per person, sometimes a second one, on 80-90% of their prompts.
HABITUAL_PHRASES = (
    "Let's think step by step.", "Please show your reasoning.",
    "Explain your reasoning step by step.", "Think it through step by step.",
    "Walk me through it step by step.", "Show your work please.",
    "Please explain step by step.", "Let's work this out step by step.",
    "Explain your reasoning before you answer.", "Take it one step at a time.",
)
_FOLLOW_UPS = (
    "[Thanks!|Thx,|Great.] [Can you make it|Make it] [shorter|a bit shorter|simpler]?",
    "[Could you give me|Can I have|Show me] an example?",
    "[Hmm|No], that's not [quite|really] what I meant. I'm asking about {city2}[, not in "
    "general|].",
    "[ok|okay] and how long would that take?", "What would you do in my [place|shoes]?",
    "Can you put that in a [table|list]?", "[Great|Nice], now translate it into {language}.",
    "Why?", "Is there a [cheaper|simpler|faster] option?",
    "Can you explain the {ordinal} [point|step|part] again?",
    "Makes sense. What are the [downsides|risks]?", "What if I only have {minutes} minutes?",
    "And for {people} people?", "My {relation} says the opposite, who's right?",
    "[Perfect.|Cool.|Thanks.] One more thing: {ask}",
)
# fmt: on
_ORDINALS = ("first", "second", "third", "last")


class Style(NamedTuple):
    """How one person writes; fixed per account."""

    context: float  # chance of a short sentence about the writer's situation
    detail: float  # chance of concrete circumstances (one or two sentences)
    lower: float  # chance a prompt is typed all lower case
    bare: float  # chance the final punctuation is dropped
    typos: float  # chance of one swapped pair of letters
    opener: float
    closer: float
    habit: str | None  # a reasoning request this person tacks on
    habit_rate: float


def style(rng: random.Random, reasoning_habit: bool) -> Style:
    return Style(
        context=rng.uniform(0.1, 0.4),
        detail=rng.uniform(0.3, 0.8),
        lower=rng.choice((0.0, 0.0, 0.1, 0.6, 0.95)),
        bare=rng.choice((0.0, 0.2, 0.7)),
        typos=rng.choice((0.0, 0.05, 0.2)),
        opener=rng.uniform(0.05, 0.5),
        closer=rng.uniform(0.05, 0.45),
        habit=rng.choice(REASONING_HABITS) if reasoning_habit else None,
        habit_rate=rng.uniform(0.5, 0.9),
    )


def _typo(rng: random.Random, text: str) -> str:
    words = text.split(" ")
    index = rng.randrange(len(words))
    word = words[index]
    if len(word) > 3 and word.isalpha():
        at = rng.randrange(len(word) - 1)
        words[index] = word[:at] + word[at + 1] + word[at] + word[at + 2 :]
    return " ".join(words)


def _details(rng: random.Random, writer: Style) -> int:
    roll = rng.random()
    return 2 if roll < writer.detail / 3 else 1 if roll < writer.detail else 0


def styled(rng: random.Random, writer: Style, text: str, *, framed: bool = True) -> str:
    """``text`` as this writer types it: with an opener, circumstances and a closer when
    ``framed`` (a new question); a quick reaction gets at most a closer."""
    if not framed:
        if rng.random() < writer.closer / 3:
            text = f"{text} {rng.choice(_CLOSERS)}"
        return _typed(rng, writer, text)
    parts = []
    if rng.random() < writer.opener:
        parts.append(fill(rng, rng.choice(_OPENERS)))
    if rng.random() < writer.context:
        parts.append(fill(rng, rng.choice(_CONTEXT)))
    details = [fill(rng, rng.choice(_DETAILS)) for _ in range(_details(rng, writer))]
    parts.append(text)
    if details and rng.random() < 0.5:
        parts[-1:-1] = details  # the circumstances first, then the question
    else:
        parts += details
    if rng.random() < writer.closer:
        parts.append(rng.choice(_CLOSERS))
    if writer.habit is not None and rng.random() < writer.habit_rate:
        parts.append(writer.habit)
    return _typed(rng, writer, " ".join(parts))


def _typed(rng: random.Random, writer: Style, out: str) -> str:
    if rng.random() < writer.typos:
        out = _typo(rng, out)
    if rng.random() < writer.lower:
        out = out.lower()
    if rng.random() < writer.bare:
        out = out.rstrip(".!?")
    return out


# fmt: off
_DRAFT = (
    "[Hi|Hello|Dear] {name}, [I hope you're well.|hope all is good.|]",
    "[I'm writing about|Following up on|Just a note about] {request_thing}.",
    "[As discussed|Like I said|As mentioned] on {weekday}, {complaint}.",
    "[Could you|Would you be able to|Please] [get back to me|let me know|confirm] by {weekday}?",
    "[I'd really appreciate it|It would help a lot|That would be great] [if we could|to] "
    "[sort this out|find a time|settle this] [soon|this week|before {month}].",
    "[Sorry for the delay|Apologies for the late reply], {constraint}.",
    "[Thanks|Thank you|Cheers],[ {name}|] ",
)
# fmt: on


def draft(rng: random.Random) -> str:
    """A message the writer wants help with: pasted, and theirs alone."""
    first, *middle, last = _DRAFT
    body = rng.sample(middle, rng.randint(2, 4))
    return " ".join(fill(rng, line) for line in (first, *body, last)).strip()


_PASTE_DRAFT = (
    "[Can you make this|Please make this|Help me make this] [sound|read] more {tone}:",
    "[Fix|Improve|Tighten up] my [email|message|reply] to my {recipient}:",
    "[Is this|Does this sound] ok to send to my {recipient}?",
)


def question(rng: random.Random, topic: str | None = None) -> str:
    """One everyday question, unstyled."""
    topic = topic if topic is not None else rng.choice(TOPIC_NAMES)
    if topic == "email" and rng.random() < 0.4:
        return f"{fill(rng, rng.choice(_PASTE_DRAFT))}\n\n{draft(rng)}"
    return fill(rng, rng.choice(TOPICS[topic]))


def personal_prompt(rng: random.Random, writer: Style, topic: str | None = None) -> str:
    """A first turn: an everyday question in this writer's style."""
    return styled(rng, writer, question(rng, topic))


def follow_up(rng: random.Random, writer: Style, topic: str) -> str:
    """A later turn of a conversation on ``topic``: a reaction, or a related new question."""
    if rng.random() < 0.45:
        return styled(rng, writer, question(rng, topic))
    text = expand(rng, rng.choice(_FOLLOW_UPS))
    slots = _Slots(rng)
    slots["ordinal"] = rng.choice(_ORDINALS)
    if "{ask}" in text:
        slots["ask"] = question(rng, topic)
    return styled(rng, writer, text.format_map(slots), framed="{ask}" in text)


_REPLY = (
    "Sure! Here's a quick rundown.",
    "Good question.",
    "Short answer: it depends.",
    "Here are a few options you could try.",
    "Happy to help with that.",
    "There are a couple of things going on here.",
)
_REPLY_BODY = (
    "The main thing to watch is consistency, more than any single trick.",
    "Start small, check the result, then adjust one thing at a time.",
    "Most people find the second option easier to stick with.",
    "If that doesn't work, the usual culprit is the setup rather than the method.",
    "Costs vary a lot by season, so compare a few dates before committing.",
    "A simple checklist helps: what you have, what you need, and what can wait.",
    "It is usually safe, but there are exceptions worth knowing about.",
    "Keep notes as you go; it makes the next attempt much faster.",
)


def assistant_reply(rng: random.Random, prompt: str) -> str:
    """What the (imaginary) model answered: resent with the history by chat clients."""
    words = prompt.split()[:8]
    body = [rng.choice(_REPLY), f"About {' '.join(words)}:"]
    body += [rng.choice(_REPLY_BODY) for _ in range(rng.randint(2, 5))]
    return " ".join(body)


# --- class work (the NAT office / campus population) ------------------------------------------

ASSIGNMENTS = (
    "the causes of the French Revolution",
    "how photosynthesis turns light into chemical energy",
    "writing a Python function that checks whether a string is a palindrome",
    "the difference between mitosis and meiosis",
    "what happens to supply and demand when a tax is added",
    "why the Roman Republic became an empire",
)
# fmt: off
_ASK = (
    "[can you|could you|pls] explain {a}?",
    "I [have|need] to write about {a} and [I don't know where to start|I'm blanking]",
    "our [teacher|prof|TA] wants us to [explain|write up] {a}, help",
    "what's the [simplest|easiest|quickest] way to understand {a}",
    "I'm stuck on {a}. Can you [break it down|go through it|help]?",
    "help me [outline|plan|structure] an answer on {a}",
    "ELI5 {a} [please|pls|]",
    "could you check my understanding of {a}? I think it's [about|mostly about] {guess}",
    "we're doing {a} in [class|lecture|section] and I'm [lost|confused]",
    "[quick|dumb|random] question about {a}: [where do I start|what matters most]?",
)
_GUESSES = ("money", "energy", "power", "cells splitting", "loops", "prices", "people",
            "the king", "light", "taxes", "the army")
_DETAIL = (
    "", "", "It's due {day}.", "For my {course} class.", "In about {words} words.",
    "With an example please.", "I already read the chapter [twice|and still don't get it].",
    "Keep it simple.", "My notes say something different.", "[Test|Quiz|Exam] is {day}.",
)
# fmt: on
_DAYS = ("tomorrow", "Friday", "Monday", "tonight", "next week")
_COURSES = ("history", "bio", "intro CS", "econ", "classics", "AP Bio", "101")


def class_question(rng: random.Random, writer: Style, assignment: str) -> str:
    """A student asking about the class assignment in their own words."""
    slots = _Slots(rng)
    slots.update(
        a=assignment, guess=rng.choice(_GUESSES), day=rng.choice(_DAYS), course=rng.choice(_COURSES)
    )
    text = expand(rng, rng.choice(_ASK)).format_map(slots)
    detail = expand(rng, rng.choice(_DETAIL)).format_map(slots)
    text = text[0].upper() + text[1:]
    return styled(rng, writer, f"{text} {detail}".strip())


class Habit(NamedTuple):
    """A habitual closing phrase: ``phrases[0]`` mostly, ``phrases[1]`` (if any) at times."""

    phrases: tuple[str, ...]
    rate: float  # share of prompts that end with one of the phrases
    second: float  # of those, the share that end with the second phrase


def habit(rng: random.Random) -> Habit:
    """One person's habit: a phrase of ``HABITUAL_PHRASES`` on 80-90% of their prompts."""
    phrases = tuple(rng.sample(HABITUAL_PHRASES, 2 if rng.random() < 0.3 else 1))
    return Habit(phrases, rng.uniform(0.8, 0.9), rng.uniform(0.15, 0.4))


def with_habit(rng: random.Random, habit: Habit, text: str) -> str:
    """``text`` ended with the habitual phrase, as often as the habit goes."""
    if rng.random() >= habit.rate:
        return text
    phrase = habit.phrases[1 if len(habit.phrases) > 1 and rng.random() < habit.second else 0]
    sep = "\n\n" if "\n" in text else " "  # after a pasted block, on a line of its own
    return f"{text}{sep}{phrase}"
