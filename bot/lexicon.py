"""The words people type, per language, and what the parsers say back.

`bot/answers.py` reads typed answers with these tables. Words are written here
as people type them; they are normalized (case, accents, Arabic letter forms)
when the tables are built, exactly as typed text is. Adding a language means
adding its entry to each table below (README, "Adding a language"); the
`MESSAGES` keys must match English's, which a test checks.

Unit and number words are pooled across languages: someone using the Spanish
interview who types "2 weeks" is still understood.
"""

from __future__ import annotations

YES = {
    "en": ["yes", "y", "yeah", "yea", "yep", "yup", "ya", "aye", "sure", "correct", "true",
           "i do", "i have", "yes i do", "yes i have", "it is", "i am", "affirmative",
           "definitely", "absolutely", "of course", "right"],
    "es": ["sí", "si", "s", "claro", "correcto", "cierto", "vale", "afirmativo", "por supuesto",
           "así es", "sí tengo", "si tengo", "sí, tengo", "exacto", "efectivamente", "sip"],
    "ru": ["да", "д", "ага", "угу", "конечно", "верно", "есть", "да есть", "так точно",
           "ну да", "да, есть", "бывает", "имеется", "разумеется"],
    "ar": ["نعم", "أجل", "ايوه", "أيوه", "اي", "إي", "بلى", "صح", "صحيح", "طبعا", "طبعًا",
           "أكيد", "نعم لدي", "نعم عندي", "ايوا", "آه"],
}
NO = {
    "en": ["no", "n", "nope", "nah", "no i don't", "no i dont", "i don't", "i dont", "false",
           "not at all", "never", "negative", "no i haven't", "i haven't", "not really",
           "none", "nothing", "it isn't", "i am not", "i'm not"],
    "es": ["no", "nop", "para nada", "nunca", "no tengo", "negativo", "tampoco", "ninguno",
           "nada", "no, no"],
    "ru": ["нет", "не", "неа", "нету", "никогда", "не было", "нет, не", "отнюдь", "ничего"],
    "ar": ["لا", "كلا", "لأ", "أبدا", "أبدًا", "لا يوجد", "ليس لدي", "لا ليس", "مش", "لا عندي"],
}
UNSURE = {
    "en": ["not sure", "unsure", "don't know", "dont know", "do not know", "dunno",
           "i don't know", "i dont know", "idk", "maybe", "perhaps", "no idea",
           "not certain", "i'm not sure", "im not sure", "i am not sure", "?", "possibly",
           "can't tell", "cant tell", "unknown", "not measured", "didn't measure",
           "did not measure", "haven't measured", "no thermometer", "not taken",
           "n/a", "na", "don't have a thermometer", "not known"],
    "es": ["no sé", "no se", "no lo sé", "no lo se", "no estoy seguro", "no estoy segura",
           "quizás", "quizas", "quizá", "tal vez", "ni idea", "no sabría decir", "desconocido",
           "no medida", "no medido", "no la medí", "no lo medí", "sin termómetro",
           "no tengo termómetro", "puede ser", "a lo mejor", "no sabe"],
    "ru": ["не знаю", "не уверен", "не уверена", "может быть", "возможно", "наверное",
           "затрудняюсь ответить", "неизвестно", "не измеряли", "не измерял", "не измеряла",
           "не мерил", "не мерила", "нет градусника", "нет термометра", "без понятия",
           "хз", "не помню", "может"],
    "ar": ["لا أعرف", "لا اعرف", "مش عارف", "مش عارفة", "لا أدري", "غير متأكد", "غير متأكدة",
           "ربما", "يمكن", "ممكن", "لا أعلم", "لا اعلم", "مجهول", "لم أقسها", "لم اقسها",
           "لم تقس", "لم يتم القياس", "لا يوجد مقياس حرارة", "ما بعرف", "مو متأكد"],
}
NONE = {  # "none of these" to a tick-all-that-apply list
    "en": ["none", "no", "nothing", "none of these", "none of them", "nope", "nah", "neither",
           "no none", "0", "n", "none of the above", "nothing like that", "all fine"],
    "es": ["ninguno", "ninguna", "nada", "ninguno de estos", "ninguna de estas", "no",
           "ninguno de ellos", "nada de eso", "todo bien"],
    "ru": ["ничего", "ничего из этого", "ни одного", "нет", "ничего такого", "ничего нет",
           "всё в порядке", "нет ничего"],
    "ar": ["لا شيء", "ولا واحد", "لا شيء من هذه", "لا", "لا يوجد", "ولا شيء", "لا شي"],
}
# said alone, these are a duration in days
TODAY = {
    "en": ["today", "this morning", "tonight", "this evening", "this afternoon", "just now",
           "hours", "a few hours"],
    "es": ["hoy", "esta mañana", "esta noche", "esta tarde", "ahora mismo", "unas horas"],
    "ru": ["сегодня", "сегодня утром", "сегодня вечером", "только что", "несколько часов"],
    "ar": ["اليوم", "هذا الصباح", "الليلة", "هذا المساء", "الآن", "منذ ساعات", "ساعات"],
}
YESTERDAY = {
    "en": ["yesterday", "last night", "since yesterday", "1 night"],
    "es": ["ayer", "anoche", "desde ayer"],
    "ru": ["вчера", "вчера вечером", "со вчерашнего дня", "вчера ночью"],
    "ar": ["أمس", "امس", "البارحة", "منذ أمس", "الليلة الماضية"],
}
# words that may come before a number and change nothing ("about 3 days")
FILLERS = {
    "en": ["about", "around", "roughly", "approx", "approximately", "nearly", "almost", "over",
           "maybe", "like", "just", "only", "for", "since", "it was", "it's", "its", "i am",
           "i'm", "im", "he is", "she is", "they are", "age", "aged", "the last", "last",
           "past"],
    "es": ["unos", "unas", "alrededor de", "aproximadamente", "casi", "más de", "hace",
           "desde hace", "tiene", "tengo", "tiene unos", "fue", "de", "sobre", "cerca de",
           "edad"],
    "ru": ["около", "примерно", "почти", "уже", "больше", "мне", "ему", "ей", "где-то",
           "приблизительно", "было", "с", "в течение", "возраст"],
    "ar": ["حوالي", "تقريبا", "تقريبًا", "منذ", "قبل", "عمري", "عمره", "عمرها", "كانت",
           "كان", "لمدة", "العمر"],
}
# unit word -> days | weeks | months | years | hours (all languages pooled)
UNITS = {
    "days": ["day", "days", "d", "night", "nights", "día", "días", "noche", "noches",
             "день", "дня", "дней", "сутки", "суток", "ночь", "ночи", "д",
             "يوم", "أيام", "ايام", "ليلة", "ليالي"],
    "hours": ["hour", "hours", "hrs", "hr", "h", "minutes", "minute", "mins", "min", "hora",
              "horas", "час", "часа", "часов", "минут", "ساعة", "ساعات", "دقيقة", "دقائق"],
    "weeks": ["week", "weeks", "wk", "wks", "w", "semana", "semanas", "неделя", "недели",
              "недель", "неделю", "нед", "أسبوع", "اسبوع", "أسابيع", "اسابيع"],
    "months": ["month", "months", "mo", "mos", "m", "mes", "meses", "месяц", "месяца",
               "месяцев", "мес", "شهر", "أشهر", "اشهر", "شهور"],
    "years": ["year", "years", "yr", "yrs", "y", "año", "años", "ano", "anos", "год", "года",
              "лет", "г", "سنة", "سنوات", "سنين", "عام", "أعوام", "اعوام"],
}
# a number and its unit in one word (Arabic duals)
PAIRS = {"يومين": (2, "days"), "أسبوعين": (2, "weeks"), "اسبوعين": (2, "weeks"),
         "شهرين": (2, "months"), "سنتين": (2, "years"), "عامين": (2, "years"),
         "ساعتين": (2, "hours")}
NUMBER_WORDS = {
    "zero": 0, "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60,
    "seventy": 70, "eighty": 80, "ninety": 90, "couple": 2, "a couple of": 2, "a couple": 2,
    "few": 3, "a few": 3, "several": 3, "half a": 0.5, "half an": 0.5,
    "un": 1, "una": 1, "uno": 1, "dos": 2, "tres": 3, "cuatro": 4, "cinco": 5, "seis": 6,
    "siete": 7, "ocho": 8, "nueve": 9, "diez": 10, "un par de": 2, "unos pocos": 3,
    "один": 1, "одна": 1, "одну": 1, "два": 2, "две": 2, "три": 3, "четыре": 4, "пять": 5,
    "шесть": 6, "семь": 7, "восемь": 8, "девять": 9, "десять": 10, "пару": 2, "пара": 2,
    "несколько": 3, "полтора": 1.5, "полторы": 1.5,
    "واحد": 1, "واحدة": 1, "ثلاثة": 3, "ثلاث": 3, "أربعة": 4, "أربع": 4, "خمسة": 5, "خمس": 5,
    "ستة": 6, "ست": 6, "سبعة": 7, "سبع": 7, "عشرة": 10, "عشر": 10,
}
# temperature unit words (pooled): Celsius or Fahrenheit
CELSIUS = ["c", "celsius", "centigrade", "grados", "grado", "centígrados", "centigrados",
           "°c", "градус", "градуса", "градусов", "с", "ц", "цельсия", "درجة", "درجات",
           "مئوية", "س"]
FAHRENHEIT = ["f", "fahrenheit", "fahrenheit", "фаренгейт", "фаренгейта", "ف", "فهرنهايت"]

# What the parsers say when they cannot read an answer, after the flow's re-ask.
MESSAGES = {
    "en": {
        "yes_no": "please answer yes or no (or 'not sure')",
        "temp_format": "type the reading as a number, e.g. 38.5 or 101 F, or 'not measured'",
        "temp_unclear": "{value} is not a body temperature I can read: type it in °C "
                        "(e.g. 38.5) or °F (e.g. 101 F)",
        "temp_impossible": "{value} is not a possible body temperature: please check the "
                           "reading",
        "duration_weekday": "how many days is that? Type e.g. '3 days' or '2 weeks'",
        "duration_format": "type how long, e.g. '3 days', '2 weeks' or '15 years'",
        "duration_too_long": "{value} is longer than a lifetime: please check it",
        "age_format": "type the age as a number, e.g. 42, or '7 weeks' / '5 months' for a baby",
        "age_impossible": "{value} is not a possible age: please check it",
        "number_format": "type a number",
        "number_range": "{value} is outside {low}..{high}",
        "list_range": "{value} is not on the list: use 1 to {high}, or 'none'",
        "list_format": "type the numbers of all that apply (e.g. 1, 3), or 'none'",
        "list_changed": "that list has changed",
        "text_too_long": "at most {high} characters",
    },
    "es": {
        "yes_no": "responda sí o no (o «no sé»)",
        "temp_format": "escriba la lectura como un número, p. ej. 38,5 o 101 F, o «no medida»",
        "temp_unclear": "{value} no es una temperatura corporal que pueda leer: escríbala en "
                        "°C (p. ej. 38,5) o en °F (p. ej. 101 F)",
        "temp_impossible": "{value} no es una temperatura corporal posible: revise la lectura",
        "duration_weekday": "¿cuántos días son? Escriba p. ej. «3 días» o «2 semanas»",
        "duration_format": "escriba cuánto tiempo, p. ej. «3 días», «2 semanas» o «15 años»",
        "duration_too_long": "{value} es más que una vida: revíselo",
        "age_format": "escriba la edad como un número, p. ej. 42, o «7 semanas» / «5 meses» "
                      "para un bebé",
        "age_impossible": "{value} no es una edad posible: revísela",
        "number_format": "escriba un número",
        "number_range": "{value} está fuera de {low}..{high}",
        "list_range": "{value} no está en la lista: use del 1 al {high}, o «ninguno»",
        "list_format": "escriba los números de todo lo que corresponda (p. ej. 1, 3), o "
                       "«ninguno»",
        "list_changed": "esa lista ha cambiado",
        "text_too_long": "como máximo {high} caracteres",
    },
    "ru": {
        "yes_no": "ответьте «да» или «нет» (или «не знаю»)",
        "temp_format": "напишите показание числом, например 38,5 или 101 F, или «не измеряли»",
        "temp_unclear": "{value} — не похоже на температуру тела: напишите её в °C "
                        "(например 38,5) или в °F (например 101 F)",
        "temp_impossible": "{value} — невозможная температура тела: проверьте показание",
        "duration_weekday": "сколько это дней? Напишите, например, «3 дня» или «2 недели»",
        "duration_format": "напишите, как долго, например «3 дня», «2 недели» или «15 лет»",
        "duration_too_long": "{value} — дольше человеческой жизни: проверьте",
        "age_format": "напишите возраст числом, например 42, или «7 недель» / «5 месяцев» "
                      "для младенца",
        "age_impossible": "{value} — невозможный возраст: проверьте",
        "number_format": "напишите число",
        "number_range": "{value} вне диапазона {low}..{high}",
        "list_range": "{value} нет в списке: используйте числа от 1 до {high} или «ничего»",
        "list_format": "напишите номера всех подходящих пунктов (например 1, 3) или «ничего»",
        "list_changed": "этот список изменился",
        "text_too_long": "не более {high} символов",
    },
    "ar": {
        "yes_no": "أجب بنعم أو لا (أو «لا أعرف»)",
        "temp_format": "اكتب القراءة رقمًا، مثل 38.5 أو 101 F، أو «لم يتم القياس»",
        "temp_unclear": "{value} ليست درجة حرارة جسم أستطيع قراءتها: اكتبها بالدرجة المئوية "
                        "(مثل 38.5) أو بالفهرنهايت (مثل 101 F)",
        "temp_impossible": "{value} ليست درجة حرارة جسم ممكنة: يرجى التحقق من القراءة",
        "duration_weekday": "كم يومًا هذا؟ اكتب مثلًا «3 أيام» أو «أسبوعين»",
        "duration_format": "اكتب المدة، مثلًا «3 أيام» أو «أسبوعين» أو «15 سنة»",
        "duration_too_long": "{value} أطول من عمر إنسان: يرجى التحقق",
        "age_format": "اكتب العمر رقمًا، مثل 42، أو «7 أسابيع» / «5 أشهر» للرضيع",
        "age_impossible": "{value} ليس عمرًا ممكنًا: يرجى التحقق",
        "number_format": "اكتب رقمًا",
        "number_range": "{value} خارج النطاق {low}..{high}",
        "list_range": "{value} ليس في القائمة: استخدم من 1 إلى {high}، أو «لا شيء»",
        "list_format": "اكتب أرقام كل ما ينطبق (مثل 1، 3)، أو «لا شيء»",
        "list_changed": "تغيّرت تلك القائمة",
        "text_too_long": "{high} حرفًا على الأكثر",
    },
}
